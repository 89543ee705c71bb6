def test_freed_memory_is_kept_on_glibc_unless_the_environment_says_default(monkeypatch):
    import ctypes.util
    import sys

    from mlff.memory import keep_freed_memory

    monkeypatch.setenv("MLFF_MALLOC", "default")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MLFF_MALLOC")
    glibc = sys.platform.startswith("linux") and ctypes.util.find_library("c") is not None
    assert keep_freed_memory() is glibc
