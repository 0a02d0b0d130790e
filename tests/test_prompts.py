"""Prompt readers: MS-COCO captions JSON, PartiPrompts TSV, one prompt per line."""

import json

import pytest

from repro.sampling.prompts import PromptsError, read_prompts

COCO = {
    "info": {"description": "COCO 2017 captions, shrunk"},
    "images": [
        {"id": 42, "file_name": "42.jpg"},
        {"id": 7, "file_name": "7.jpg"},
        {"id": 139, "file_name": "139.jpg"},
        {"id": 9, "file_name": "9.jpg"},
    ],
    "annotations": [
        {"image_id": 139, "id": 5, "caption": "A woman stands in the dining area at the table."},
        {"image_id": 7, "id": 900, "caption": "  A giraffe eating leaves.\n"},
        {"image_id": 42, "id": 1, "caption": "A man riding a wave on top of a surfboard."},
        {"image_id": 7, "id": 2, "caption": "Two giraffes near a tree."},
        {"image_id": 139, "id": 3, "caption": "A room with chairs, a table, and a woman."},
        {"image_id": 9, "id": 4, "caption": "Closeup of bins of food."},
        {"image_id": 42, "id": 8, "caption": "A surfer rides a small wave."},
    ],
}
COCO_ORDER = [
    "A giraffe eating leaves.",
    "Closeup of bins of food.",
    "A man riding a wave on top of a surfboard.",
    "A woman stands in the dining area at the table.",
]
PARTI = (
    "Prompt\tCategory\tChallenge\tNote\n"
    "bond\tAbstract\tBasic\tBiology-inspired concepts with multiple meanings\n"
    'A robot painted as graffiti. The words "Fly an airplane" are written.\tOutdoor '
    "Scenes\tComplex\t\n"
    '"quoted" at the start \tArts\tBasic\t\n'
)


def write(path, text):
    path.write_text(text)
    return path


def test_coco_takes_the_first_caption_per_image_in_ascending_image_id(tmp_path):
    path = write(tmp_path / "captions_val2017.json", json.dumps(COCO))
    assert read_prompts(path) == COCO_ORDER  # auto: JSON -> coco
    assert read_prompts(path, "coco", limit=2) == COCO_ORDER[:2]


def test_parti_tsv_reads_the_prompt_column_with_literal_quotes(tmp_path):
    path = write(tmp_path / "PartiPrompts.tsv", PARTI)
    expected = [
        "bond",
        'A robot painted as graffiti. The words "Fly an airplane" are written.',
        '"quoted" at the start',
    ]
    assert read_prompts(path) == expected == read_prompts(path, "parti")
    moved = write(tmp_path / "moved.tsv", "Category\tPrompt\nArts\ta red cube\nX\t\n")
    assert read_prompts(moved) == ["a red cube"]


def test_one_prompt_per_line_skips_blank_lines(tmp_path):
    path = write(tmp_path / "prompts.txt", "a cat\n\n  a dog on a sofa \nthree\n")
    assert read_prompts(path) == ["a cat", "a dog on a sofa", "three"]
    assert read_prompts(path, "lines", limit=1) == ["a cat"]


@pytest.mark.parametrize(
    ("name", "text", "format", "needle"),
    [
        ("missing.json", None, "auto", "does not exist"),
        ("c.json", "{not json", "auto", "is not COCO captions JSON (not JSON"),
        ("c.json", '{"images": []}', "auto", "no 'annotations' list"),
        ("c.json", '{"annotations": [{"id": 1}]}', "coco", "annotations[0] lacks image_id"),
        ("p.tsv", "Text\tCategory\na\tb\n", "auto", "no 'Prompt' column"),
        ("p.txt", "\n \n", "auto", "holds no prompts"),
        ("p.tsv", "Prompt\tCategory\n", "parti", "holds no prompts"),
        ("p.txt", "a\n", "yaml", "unknown format 'yaml'"),
    ],
)
def test_bad_prompts_files_fail_in_one_line_naming_the_file(tmp_path, name, text, format, needle):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(PromptsError) as error:
        read_prompts(path, format)
    message = str(error.value)
    assert needle in message and str(path) in message and "\n" not in message
    assert isinstance(error.value, ValueError)
