"""Qwen-VL preprocessing: pixels, grids, placeholder counts and video timestamps equal transformers'.

The reference is transformers' ``Qwen3VLProcessor`` with the image and video processors
``AutoImageProcessor`` / ``AutoVideoProcessor`` load from a directory holding Qwen3-VL's
``preprocessor_config.json`` and ``video_preprocessor_config.json`` (as the checkpoint ships them), and a tiny
tokenizer with Qwen's vision tokens (and the timestamps as tokens, so the ids show them).
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoVideoProcessor, Qwen3VLProcessor

from moezoo.convert.testing import tiny_tokenizer
from moezoo.models.encoders.qwen3_vl import Qwen3VLVisionConfig, Qwen3VLVisionEncoder
from moezoo.processing.qwen_vl import (
    IMAGE_TOKEN,
    QWEN3_VL_IMAGE,
    QWEN3_VL_VIDEO,
    VIDEO_TOKEN,
    VISION_END,
    VISION_START,
    QwenVLImageProcessor,
    QwenVLVideoProcessor,
    timestamps,
)

# Smaller pixel budgets than the checkpoints' (same code paths, fewer patches): a 65536 minimum would
# upscale every test image to 256 x 256.
IMAGE = {**QWEN3_VL_IMAGE, "size": {"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 40}}
VIDEO = {**QWEN3_VL_VIDEO, "size": {"shortest_edge": 32 * 32 * 2, "longest_edge": 32 * 32 * 48}}
SIZES = [(64, 64), (100, 37), (300, 200), (37, 500), (1000, 900)]  # (width, height): up, down, odd, clamped
PROMPT = f"w5 {VISION_START}{IMAGE_TOKEN}{VISION_END} w6"


def _image(size, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _video(frames, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """transformers' Qwen3VLProcessor, its sub-processors loaded from checkpoint-style files."""
    path = tmp_path_factory.mktemp("qwen3_vl")
    (path / "preprocessor_config.json").write_text(json.dumps(
        {**IMAGE, "image_processor_type": "Qwen2VLImageProcessorFast", "processor_class": "Qwen3VLProcessor"}))
    (path / "video_preprocessor_config.json").write_text(json.dumps(
        {**VIDEO, "video_processor_type": "Qwen3VLVideoProcessor", "processor_class": "Qwen3VLProcessor"}))
    tokenizer = tiny_tokenizer(64)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END]})
    tokenizer.add_tokens([f"<{i / 10:.1f} seconds>" for i in range(200)])
    return Qwen3VLProcessor(image_processor=AutoImageProcessor.from_pretrained(path),
                            video_processor=AutoVideoProcessor.from_pretrained(path), tokenizer=tokenizer)


def test_images_pixels_grids_and_placeholders_equal_transformers(reference):
    images = [_image(size, seed) for seed, size in enumerate(SIZES)]
    want = reference(text=[PROMPT * len(images)], images=images, return_tensors="pt")
    proc = QwenVLImageProcessor(IMAGE)
    got = proc(images)
    torch.testing.assert_close(got["pixel_values"], want["pixel_values"], rtol=0, atol=0)
    assert torch.equal(got["image_grid_thw"], want["image_grid_thw"])
    # the placeholder expansion: t h w / merge² image tokens each, the same ids as transformers'
    text = PROMPT * len(images)
    for placeholder in proc.placeholders(got["image_grid_thw"]):
        text = text.replace(f"{VISION_START}{IMAGE_TOKEN}{VISION_END}", f"{VISION_START}{placeholder}{VISION_END}", 1)
    ids = reference.tokenizer(text, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, want["input_ids"])
    image_id = reference.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert int((want["input_ids"] == image_id).sum()) == sum(proc.num_tokens(got["image_grid_thw"]))
    assert proc.num_tokens(got["image_grid_thw"]) == (got["image_grid_thw"].prod(-1) // 4).tolist()


def test_smart_resize_keeps_the_pixel_budget_and_the_patch_multiple():
    proc = QwenVLImageProcessor(IMAGE)
    for size in SIZES:
        grid = proc([_image(size, 0)])["image_grid_thw"][0].tolist()
        height, width = grid[1] * 16, grid[2] * 16
        assert grid[0] == 1 and height % 32 == 0 and width % 32 == 0
        assert 32 * 32 * 4 <= height * width <= 32 * 32 * 40, (size, height, width)
    assert proc([_image((256, 160), 0)])["image_grid_thw"].tolist() == [[1, 10, 16]]  # in budget: as is


@pytest.mark.parametrize("frames, fps", [(8, 4.0), (9, 3.0), (5, None)])
def test_video_pixels_grid_and_timestamps_equal_transformers(reference, frames, fps):
    video = _video(frames, 48, 80)
    metadata = {"total_num_frames": frames, "fps": fps, "frames_indices": list(range(frames))}
    prompt = f"w7 {VISION_START}{VIDEO_TOKEN}{VISION_END} w8"
    want = reference(text=[prompt], videos=[video], video_metadata=[metadata], return_tensors="pt",
                     cap_pixels_per_frame=False)
    proc = QwenVLVideoProcessor(VIDEO)
    got = proc([video], fps=fps)
    torch.testing.assert_close(got["pixel_values_videos"], want["pixel_values_videos"], rtol=0, atol=0)
    assert torch.equal(got["video_grid_thw"], want["video_grid_thw"])
    placeholder, = proc.placeholders(got["video_grid_thw"], got["timestamps"])
    ids = reference.tokenizer(prompt.replace(VIDEO_TOKEN, placeholder), return_tensors="pt")["input_ids"]
    assert torch.equal(ids, want["input_ids"])
    t, h, w = got["video_grid_thw"][0].tolist()
    assert placeholder.count(VIDEO_TOKEN) == t * h * w // 4 and placeholder.count("seconds>") == t


def test_video_frames_as_a_list_and_kept_as_given():
    video = _video(6, 48, 80)
    proc = QwenVLVideoProcessor(VIDEO)
    as_list = proc([[Image.fromarray(f) for f in video]], fps=2.0)
    torch.testing.assert_close(as_list["pixel_values_videos"], proc([video], fps=2.0)["pixel_values_videos"])
    kept = proc([video[:4]], fps=2.0, sample_frames=False)
    assert kept["frame_indices"] == [[0, 1, 2, 3]] and kept["timestamps"] == [[0.25, 1.25]]
    assert kept["video_grid_thw"][0, 0] == 2
    with pytest.raises(ValueError, match="the frames of video 0 differ in size"):
        proc([[video[0], video[1][:20]]])
    with pytest.raises(ValueError, match="got 1 videos but 2 fps values"):
        proc([video], fps=[1.0, 2.0])


def test_timestamps_average_each_temporal_patch():
    assert timestamps([0, 2, 5, 7], fps=4.0, temporal_patch_size=2) == [0.25, 1.5]
    assert timestamps([0, 3, 6], fps=3.0, temporal_patch_size=2) == [0.5, 2.0]  # the last frame repeated


def test_the_tower_gives_one_token_per_placeholder():
    tower = Qwen3VLVisionEncoder(Qwen3VLVisionConfig(depth=1, hidden_size=32, num_heads=4, intermediate_size=32,
                                                     out_hidden_size=24, deepstack_visual_indexes=[0]))
    spec = tower.preprocess_spec()
    images = QwenVLImageProcessor({**spec["image"], "size": IMAGE["size"]})([_image((100, 37), 0),
                                                                           _image((64, 64), 1)])
    videos = QwenVLVideoProcessor({**spec["video"], "size": VIDEO["size"]})([_video(8, 48, 80)], fps=4.0)
    with torch.no_grad():
        image_out = tower(images["pixel_values"], images["image_grid_thw"])
        video_out = tower(videos["pixel_values_videos"], videos["video_grid_thw"])
    assert image_out.token_counts == QwenVLImageProcessor(IMAGE).num_tokens(images["image_grid_thw"])
    assert image_out.merged.shape == (sum(image_out.token_counts), 24)
    assert video_out.merged.shape[0] == QwenVLVideoProcessor(VIDEO).num_tokens(videos["video_grid_thw"])[0]
