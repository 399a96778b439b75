"""Step-level progress reports and cancellation of running batches."""

import pytest

from gpu_workers import runner
from gpu_workers.progress import Cancelled, Progress

GENERATION_OPTIONS = {"num_inference_steps": 2, "guidance_scale": 4.0, "height": 32, "width": 32,
                      "device": "cpu", "max_new_tokens": 4}
PROMPTS = ["a red car", "a bowl of fruit", "a lighthouse"]


@pytest.fixture
def generation_items():
    return [{"item_id": index, "prompt": prompt, "seed": index} for index, prompt in enumerate(PROMPTS)]


@pytest.fixture
def caption_items(image_paths):
    return [{"item_id": index, "image_path": str(path)} for index, path in enumerate(image_paths)]


class StopAfter:
    """A should_stop() that returns True from its call number ``calls + 1`` on."""

    def __init__(self, calls):
        self.calls = calls
        self.count = 0

    def __call__(self):
        self.count += 1
        return self.count > self.calls


def test_generation_reports_steps(sd3_checkpoint, kosmos_checkpoint, similarity, generation_items, tmp_path):
    reports = []

    runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), generation_items,
                                dict(GENERATION_OPTIONS, batch_size=2), str(tmp_path),
                                progress_callback=lambda *values: reports.append(values))

    # (done_steps, total_steps, items_done, items_total): chunks of 2 and 1 items, 2 steps each.
    assert reports == [(2, 6, 0, 3), (4, 6, 0, 3), (4, 6, 2, 3), (5, 6, 2, 3), (6, 6, 2, 3), (6, 6, 3, 3)]


def test_captioning_reports_tokens(kosmos_checkpoint, similarity, caption_items):
    reports = []

    runner.run_captioning_batch(str(kosmos_checkpoint), caption_items,
                                {"max_new_tokens": 5, "device": "cpu", "batch_size": 2},
                                progress_callback=lambda *values: reports.append(values))

    done = [report[0] for report in reports]
    assert done == sorted(done)
    assert all(report[1] == 15 and report[3] == 3 for report in reports)
    assert (10, 15, 2, 3) in reports
    assert reports[-1] == (15, 15, 3, 3)


def test_generation_stops_at_next_step(sd3_checkpoint, kosmos_checkpoint, similarity, generation_items, tmp_path):
    reports = []
    # Called once before loading, then after each denoising step: the first step is the last.
    should_stop = StopAfter(calls=1)

    with pytest.raises(Cancelled):
        runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), generation_items,
                                    dict(GENERATION_OPTIONS, num_inference_steps=8), str(tmp_path),
                                    progress_callback=lambda *values: reports.append(values),
                                    should_stop=should_stop)

    assert reports == [(3, 24, 0, 3)]
    assert list(tmp_path.iterdir()) == []


def test_captioning_stops_at_next_token(kosmos_checkpoint, similarity, caption_items):
    reports = []

    with pytest.raises(Cancelled):
        runner.run_captioning_batch(str(kosmos_checkpoint), caption_items, {"max_new_tokens": 20, "device": "cpu"},
                                    progress_callback=lambda *values: reports.append(values),
                                    should_stop=StopAfter(calls=3))

    # Called once before loading and after tokens 1 and 2; after token 3 of 3 images it stops.
    assert reports[-1] == (9, 60, 0, 3)
    assert len(reports) == 3


def test_stop_before_start_loads_nothing(kosmos_checkpoint, caption_items, monkeypatch):
    monkeypatch.setattr(runner, "_load_captioner_timed", lambda *args: pytest.fail("model loaded"))

    with pytest.raises(Cancelled, match="after 0 of 3 items"):
        runner.run_captioning_batch(str(kosmos_checkpoint), caption_items, {"device": "cpu"},
                                    should_stop=lambda: True)


def test_retried_chunk_never_goes_back():
    reports = []
    progress = Progress(items_total=4, steps_per_item=2, callback=lambda *values: reports.append(values))

    progress.step(4, 1)
    progress.step(2, 1)  # the chunk of 4 ran out of memory and restarted as 2
    progress.step(2, 2)
    progress.finish_chunk(2)

    assert reports == [(4, 8, 0, 4), (4, 8, 2, 4)]
