"""Generation seconds per image: one batched pipeline call against one prompt at a time."""

import torch

from ..generator import Generator
from .timing import run_interleaved, summarize

# Settings of the catalog's SD3.5 Large entry (model card: 28 steps, guidance 3.5, so
# classifier-free guidance doubles the batch) and of its Turbo entry (4 steps, no guidance).
SETTINGS = {
    "large": {"num_inference_steps": 28, "guidance_scale": 3.5},
    "turbo": {"num_inference_steps": 4, "guidance_scale": 0.0},
}


def measure_generation(generator: Generator, prompts: list[str], height: int, width: int, repeats: int,
                       device: torch.device) -> dict:
    """Return seconds per image of batched and one-at-a-time generation for each of SETTINGS."""
    seeds = list(range(len(prompts)))
    results = {"prompts": len(prompts), "height": height, "width": width, "settings": {}}
    for name, settings in SETTINGS.items():
        arguments = dict(settings, height=height, width=width)
        cases = {
            "batched": lambda arguments=arguments: generator.generate(prompts, seeds, **arguments),
            "one_at_a_time": lambda arguments=arguments: [
                generator.generate([prompt], [seed], **arguments) for prompt, seed in zip(prompts, seeds)],
        }
        with torch.inference_mode():
            samples = run_interleaved(cases, repeats, device)
        entry = dict(settings)
        for case, seconds in samples.items():
            entry[case] = {"seconds_per_image": summarize([value / len(prompts) for value in seconds])}
        entry["speedup"] = (entry["one_at_a_time"]["seconds_per_image"]["median"]
                            / entry["batched"]["seconds_per_image"]["median"])
        results["settings"][name] = entry
    return results
