"""Fine-tuning: a new run that starts from a pretrained checkpoint or potential file (`init_from`).

The model is built from the run's `model` section, which must describe the
pretrained architecture (only `dtype` may differ), and takes every pretrained
weight: backbone, distance encoding, embeddings, and the energy scale (a fixed
multiplier of the network's output; changing it would rescale what the network
learned). The per-element reference energies are not trained weights: they are
re-fitted by least squares on the new run's training frames, whose energies may
come from another level of theory with another energy zero.

Species: the model keeps the pretrained species list, so each embedding row keeps
the element it was trained for. The new data's elements must be among them; an
element the pretrained model never saw is an error (an appended, untrained
embedding row would make the fine-tuned model's quality for that element
depend on the new data alone, silently). Elements of the pretrained model
absent from the new training frames get a reference energy of 0.
"""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlff.checkpoint import load_init
from mlff.data.frames import Frames
from mlff.models import EnergyModel, ModelConfig, build_model
from mlff.training.config import Config, ConfigError
from mlff.training.references import fit_element_energies

# Buffers of EnergyModel that are fitted on the data rather than trained: not taken from the checkpoint.
FITTED_BUFFERS = ("priors.element_reference.energies_nev",)


def pretrained_model(config: Config, frames: Frames, train_indices: np.ndarray) -> EnergyModel:
    """The model of `config` with the weights of `config.init_from` and references re-fitted on the new frames.

    Args:
        config: the fine-tuning run (init_from names the pretrained checkpoint, a potential file or a
            shipped potential: `mlff.checkpoint.load_init`).
        frames: the new run's frames.
        train_indices: its training frames (the reference energies are fitted on them).

    Raises:
        ConfigError: the architecture or the weights do not match, or the data hold unknown elements.
    """
    if config.init_from is None:
        raise ValueError("init_from names no checkpoint")
    path = Path(config.init_from)
    checkpoint = load_init(path)
    species = [int(z) for z in checkpoint["species"]]
    unknown = sorted(set(frames.species()) - set(species))
    if unknown:
        raise ConfigError(
            f"init_from: the data hold element(s) {unknown} outside the species {species} of the pretrained "
            f"model {path}; fine-tuning keeps the pretrained species (pretrain on data with these elements)"
        )
    element_energies = fit_element_energies(frames, train_indices, species)
    model = build_model(config.model, species, element_energies, float(checkpoint["energy_scale_ev"]))
    problems = architecture_differences(config.model, checkpoint["config"]["model"])
    weights = checkpoint.get("ema_state") or checkpoint["model_state"]
    problems += weight_mismatches(model, weights)
    if problems:
        raise ConfigError(f"init_from: {path} does not fit this run's model: " + "; ".join(problems))
    load_pretrained_weights(model, weights)
    return model


def architecture_differences(model_config: ModelConfig, pretrained: dict[str, Any]) -> list[str]:
    """One line per model setting (dtype aside) that differs from the pretrained model's, naming the dotted key."""
    ours = dataclasses.asdict(model_config)
    theirs = dataclasses.asdict(ModelConfig(**pretrained))
    return [
        f"model.{key} is {ours[key]!r}, the pretrained model's is {theirs[key]!r}"
        for key in ours
        if key != "dtype" and ours[key] != theirs[key]
    ]


def weight_mismatches(model: EnergyModel, state: dict[str, torch.Tensor]) -> list[str]:
    """One line per parameter or buffer (fitted ones aside) missing, unexpected or of another shape in `state`."""
    own = {key: value for key, value in model.state_dict().items() if key not in FITTED_BUFFERS}
    incoming = {key: value for key, value in state.items() if key not in FITTED_BUFFERS}
    problems = [f"missing {key}" for key in sorted(set(own) - set(incoming))]
    problems += [f"unexpected {key}" for key in sorted(set(incoming) - set(own))]
    problems += [
        f"{key} has shape {tuple(incoming[key].shape)} in the checkpoint, {tuple(own[key].shape)} here"
        for key in sorted(set(own) & set(incoming))
        if incoming[key].shape != own[key].shape
    ]
    return problems


def load_pretrained_weights(model: EnergyModel, state: dict[str, torch.Tensor]) -> None:
    """Copy every weight and buffer of `state` into `model`, except the fitted reference energies.

    Raises:
        ConfigError: naming every missing, unexpected or differently shaped entry.
    """
    problems = weight_mismatches(model, state)
    if problems:
        raise ConfigError("pretrained weights do not fit the model: " + "; ".join(problems))
    fitted = {key: value for key, value in model.state_dict().items() if key in FITTED_BUFFERS}
    model.load_state_dict({**{key: state[key] for key in state if key not in FITTED_BUFFERS}, **fitted})
