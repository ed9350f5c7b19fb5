"""Train the latent-digits example: a VAE on scikit-learn's 8×8 digits, a latent ADM on its codes, a classifier.

    nice python examples/latent_digits/train.py     # a few minutes on one CPU thread; rewrites the shipped files

Writes beside this script (small files, loaded without pickle):
- ``vae_decoder.npz``: the VAE decoder's weights (latent → 64 pixels in [0, 1]), evaluated in numpy;
- ``latent_adm.onnx``: an ADM-form flow-matching network (Eq. 2: L_i(h, t) = W_i tanh(h) + b_i + t·e_i,
  widths 6 → 40 → 40 → 6: 86 state channels, two 48 × 48 modules on aoc-48) trained on the VAE's codes;
- ``classifier.npz``: a digit classifier whose penultimate (32-wide) features define the Fréchet distance;
- ``codes.npz``: the latent codes of the data set (means of the encoder) and their per-dimension mean and
  std: the latent ADM samples standardised codes, decoded as ``code_mean + code_std · z``.
The data are ``sklearn.datasets.load_digits`` (1,797 images bundled with scikit-learn, no download). Seeds
are fixed and torch runs on one thread, so rerunning reproduces the files on the same machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from train_two_moons import AdmMlp, fit_flow_matching  # noqa: E402  (one definition each)

LATENT = 6
HIDDEN = (40, 40)


def load_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


class Vae(torch.nn.Module):
    def __init__(self, latent: int = LATENT, width: int = 128):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(),
                                           torch.nn.Linear(width, width), torch.nn.ReLU(),
                                           torch.nn.Linear(width, 2 * latent))
        self.decoder = torch.nn.Sequential(torch.nn.Linear(latent, width), torch.nn.ReLU(),
                                           torch.nn.Linear(width, width), torch.nn.ReLU(),
                                           torch.nn.Linear(width, 64))

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_variance = self.encoder(images).chunk(2, dim=1)
        return mean, log_variance


def train_vae(images: torch.Tensor, steps: int, beta: float) -> Vae:
    vae = Vae()
    optimiser = torch.optim.Adam(vae.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    for _ in range(steps):
        batch = images[torch.randint(len(images), (256,))]
        mean, log_variance = vae.encode(batch)
        z = mean + torch.randn_like(mean) * (0.5 * log_variance).exp()
        logits = vae.decoder(z)
        reconstruction = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch, reduction="sum")
        divergence = 0.5 * (mean ** 2 + log_variance.exp() - 1 - log_variance).sum()
        loss = (reconstruction + beta * divergence) / len(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return vae.eval()


def train_classifier(images: torch.Tensor, labels: torch.Tensor, steps: int) -> torch.nn.Sequential:
    classifier = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 32),
                                     torch.nn.Tanh(), torch.nn.Linear(32, 10))
    optimiser = torch.optim.Adam(classifier.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(steps):
        index = torch.randint(len(images), (256,))
        # Light pixel noise so the features are not brittle against slightly blurred decoder outputs.
        batch = (images[index] + 0.05 * torch.randn(len(index), 64)).clamp(0, 1)
        loss = torch.nn.functional.cross_entropy(classifier(batch), labels[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return classifier.eval()


def train_flow(codes: torch.Tensor, steps: int) -> AdmMlp:
    model = AdmMlp((LATENT, *HIDDEN, LATENT))
    return fit_flow_matching(model, lambda: codes[torch.randint(len(codes), (512,))], steps)


def linear_layers(module: torch.nn.Module) -> dict[str, np.ndarray]:
    layers = [layer for layer in module.modules() if isinstance(layer, torch.nn.Linear)]
    arrays = {}
    for index, layer in enumerate(layers):
        arrays[f"weight_{index}"] = layer.weight.detach().numpy().astype(np.float32)
        arrays[f"bias_{index}"] = layer.bias.detach().numpy().astype(np.float32)
    return arrays


def export_flow(model: AdmMlp, path: Path) -> None:
    example = (torch.zeros(4, LATENT), torch.zeros(4))
    torch.onnx.export(model, example, path, input_names=["x", "t"], output_names=["velocity"],
                      dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "velocity": {0: "batch"}},
                      opset_version=17, dynamo=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=6000)
    parser.add_argument("--flow-steps", type=int, default=8000)
    parser.add_argument("--classifier-steps", type=int, default=3000)
    parser.add_argument("--beta", type=float, default=0.1, help="weight of the VAE's KL term (below 1, as latent "
                        "diffusion VAEs use: sharper decodes, an aggregate posterior unlike N(0, I))")
    parser.add_argument("--output", type=Path, default=HERE)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(arguments.seed)
    images, labels = load_images()
    images_t, labels_t = torch.as_tensor(images), torch.as_tensor(labels)

    vae = train_vae(images_t, arguments.vae_steps, arguments.beta)
    with torch.no_grad():
        codes, _ = vae.encode(images_t)
    print(f"VAE: code mean {codes.mean(0).numpy().round(2)}, std {codes.std(0).numpy().round(2)}")
    classifier = train_classifier(images_t, labels_t, arguments.classifier_steps)
    with torch.no_grad():
        accuracy = (classifier(images_t).argmax(1) == labels_t).float().mean().item()
    print(f"classifier: training accuracy {accuracy:.4f}")
    # The flow learns standardised codes (its tanh input layer sees unit-scale values); the decoder gets
    # code_mean + code_std · z back.
    code_mean, code_std = codes.mean(0), codes.std(0)
    flow = train_flow((codes - code_mean) / code_std, arguments.flow_steps)

    output = arguments.output
    output.mkdir(parents=True, exist_ok=True)
    np.savez(output / "vae_decoder.npz", **linear_layers(vae.decoder))
    np.savez(output / "classifier.npz", **linear_layers(classifier))
    np.savez(output / "codes.npz", codes=codes.numpy().astype(np.float32), labels=labels,
             code_mean=code_mean.numpy().astype(np.float64), code_std=code_std.numpy().astype(np.float64))
    export_flow(flow, output / "latent_adm.onnx")
    print(f"wrote vae_decoder.npz, classifier.npz, codes.npz and latent_adm.onnx to {output}")


if __name__ == "__main__":
    main()
