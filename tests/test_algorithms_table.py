"""docs/algorithms.md's table of shipped configs states what each config sets: update, loss, initialisation,
optimisers, batch and budget. Each cell is checked against the config file, so a config changed without its
row (or a row written wrong) fails here."""
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").glob("**/*.yaml") if "overlays" not in p.parts)
PLAYERS = {"optimizer_d": "D", "optimizer_g": "G", "optimizer_ge": "G/E", "optimizer_ae": "AE", "optimizer_e": "E",
           "optimizer_c": "C", "optimizer": ""}


def table() -> dict[str, dict[str, str]]:
    """The rows of the shipped-config table, by config path under configs/."""
    lines = (REPO / "docs" / "algorithms.md").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| config | model | follows |")))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip().strip("|").split(" | ")), strict=True))
        rows[cells["config"].strip("`")] = cells
    return rows


def optimiser(player: str, spec: dict) -> str:
    """How the table writes one optimiser: ``D Adam 1e-4 (0.5, 0.999) wd 2.5e-05``."""
    args = spec["init_args"]
    text = f"{PLAYERS[player]} {spec['class_path'].rsplit('.', 1)[1]} {args['lr']:.0e}".replace("e-0", "e-").strip()
    if args.get("betas"):
        text += f" ({args['betas'][0]:g}, {args['betas'][1]:g})"
    if args.get("weight_decay"):
        text += f" wd {args['weight_decay']:g}"
    return text


def test_the_table_has_one_row_per_shipped_config_and_no_other():
    assert sorted(table()) == sorted(str(p.relative_to(REPO / "configs")) for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_each_row_states_what_its_config_sets(path):
    row = table()[str(path.relative_to(REPO / "configs"))]
    config = yaml.safe_load(path.read_text())
    model, data, trainer = config["model"]["init_args"], config["data"]["init_args"], config["trainer"]
    assert row["model"] == config["model"]["class_path"].rsplit(".", 1)[1]
    if "update" in model:
        assert row["update"] == model["update"]
    else:  # models without the option run their phases in turn (or have one player)
        assert row["update"] in ("in turn", "one player")
    if "loss" in model:
        assert row["loss"] == model["loss"]
    std, momentum = model.get("init_std"), model.get("bn_momentum")
    if std is not None:
        assert row["initialisation"].startswith(f"N(0, {std:g})")
    else:
        assert row["initialisation"] == "torch default" or "radford_init" in row["initialisation"]
    if momentum is None:
        assert "BN momentum" not in row["initialisation"]
    else:
        assert f"BN momentum {momentum:g}" in row["initialisation"]
    stated = [o.strip() for o in row["optimiser"].split(";")]
    assert stated == [optimiser(k, v) for k, v in model.items() if k.startswith("optimizer") and v]
    assert row["batch"] == str(data["batch_size"])
    assert row["budget"] == f"{trainer['max_epochs']} epochs"
    assert row["follows"] and row["differences kept, and why"]


def test_a_row_that_disagrees_with_its_config_is_caught(monkeypatch):
    """The checker itself: a table claiming batch 128 for the toy ALI (batch 100) fails."""
    rows = table()
    rows["toy/ali_ring.yaml"]["batch"] = "128"
    monkeypatch.setattr(sys.modules[__name__], "table", lambda: rows)
    with pytest.raises(AssertionError):
        test_each_row_states_what_its_config_sets(REPO / "configs" / "toy" / "ali_ring.yaml")
