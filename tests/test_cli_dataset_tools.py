"""`python -m core datasets split|version|versions|compare|health|export`: JSON out, one-line errors."""

from __future__ import annotations

import json
import zipfile

from tests.factories import make_class, make_dataset, make_dataset_image


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    from core.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


def test_split_version_health_export_commands(stack, tmp_path, capsys):
    with stack.session() as session:
        dataset = make_dataset(session, "cli set")
        cat, dog = make_class(session, "cat"), make_class(session, "dog")
        for seed in range(20):
            make_dataset_image(session, stack.storage, dataset, seed=seed, classes=[cat if seed % 2 else dog])

    code, split, err = run_cli(capsys, "datasets", "split", "cli set", "--train", "0.6", "--val", "0.2",
                               "--test", "0.2", "--seed", "3")
    assert code == 0, err
    assert split["assigned"] == {"train": 12, "val": 4, "test": 4}

    code, version, err = run_cli(capsys, "datasets", "version", "cli set", "--notes", "first")
    assert code == 0, err
    assert version["version_number"] == 1 and version["split_counts"] == {"train": 12, "val": 4, "test": 4}
    run_cli(capsys, "datasets", "version", "cli set")
    code, listing, _ = run_cli(capsys, "datasets", "versions", "cli set")
    assert [v["version_number"] for v in listing["versions"]] == [2, 1]
    code, diff, _ = run_cli(capsys, "datasets", "compare", "cli set", "1", "2")
    assert code == 0 and diff["images_relabeled"] == [] and diff["images_added"] == []

    code, health, err = run_cli(capsys, "datasets", "health", "cli set", "--min-images", "15")
    assert code == 0, err
    assert sorted(f["class"] for f in health["findings"] if f["code"] == "small_class") == ["cat", "dog"]

    out = tmp_path / "set.zip"
    code, export, err = run_cli(capsys, "datasets", "export", "cli set", "--format", "imagefolder",
                                "--version", "1", "--out", str(out))
    assert code == 0, err
    assert export["images"] == 20 and len(zipfile.ZipFile(out).namelist()) == 20
    assert not list(tmp_path.glob(".*partial"))
    code, export, err = run_cli(capsys, "datasets", "export", "cli set", "--format", "csv", "--out",
                                str(tmp_path / "labels.csv"))
    assert code == 0, err
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    assert lines[0] == "filename,label,split" and len(lines) == 21


def test_bad_input_gives_one_line_errors(embedded_stack, tmp_path, capsys):
    with embedded_stack.session() as session:
        dataset = make_dataset(session, "small")
        make_dataset_image(session, embedded_stack.storage, dataset, seed=1, classes=[make_class(session, "x")])
    cases = [
        (("datasets", "split", "nope"), "no dataset named 'nope'"),
        (("datasets", "split", "small", "--train", "-1"), "finite number ≥ 0"),
        (("datasets", "split", "small", "--seed", "x"), "invalid int value"),
        (("datasets", "version", "nope"), "no dataset named"),
        (("datasets", "compare", "small", "1", "2"), "has no version 1"),
        (("datasets", "export", "small", "--format", "coco", "--out", str(tmp_path / "a.zip")), "invalid choice"),
        (("datasets", "export", "small", "--format", "csv", "--out", str(tmp_path / "no" / "a.zip")),
         "does not exist"),
        (("datasets", "export", "small", "--format", "imagefolder", "--out", str(tmp_path / "a.csv")),
         "needs --format csv"),
    ]
    for argv, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and out is None, argv
        assert message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "a.zip").exists()
