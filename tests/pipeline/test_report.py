import html
import json
import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from causalrec.pipeline.figures import draw_causal_graph, layered_layout
from causalrec.pipeline.report import format_number, format_p_value, write_report
from causalrec.platform.errors import DataError
from causalrec.simulators import ConfoundedRecSimulator, load_simulator_config

SCRIPT = "<script>alert('x')</script>"
NAMES = ["ips", "naive", "dr_jl", SCRIPT]
ESTIMATORS = ["ips", "snips", "dr", "switch-dr(tau=100)"]
STAGES = ["simulate", "tune", "deploy", "abtest", "ope", "report"]
POLICIES = "Policies: exact value vs. off-policy estimate"
FIGURES = {"value_vs_ope", "regret", "ope_error", "sensitivity", "ab_lift", "causal_graph"}
ONLINE = {"lift": 0.0246, "low": 0.0112, "high": 0.0380}
EXACT_LIFT = 0.0231
OFFLINE = {"estimator": "dr", "lift": 0.0187, "low": 0.0021, "high": 0.0353}


def four(x):
    """The report's rule for numbers of magnitude in [1e-3, 1e5): four decimals."""
    return f"{x:.4f}"


def interval(value, low, high):
    return f"{four(value)} [{four(low)}, {four(high)}]"


@pytest.fixture(scope="module")
def graph():
    config = load_simulator_config(preset="confounded", n_users=50, n_items=20)
    return ConfoundedRecSimulator(config).causal_graph().to_dict()


def make_run(root, graph):
    """A complete run directory with realistic values; returns the input frames."""
    rng = np.random.default_rng(7)
    (root / "abtest").mkdir(parents=True)
    oracle, logging = 0.4712, 0.2034
    true = np.array([0.4183, 0.3021, 0.4410, 0.3655])
    candidates = pd.DataFrame({
        "candidate": NAMES, "method": ["ips", "naive", "dr_jl", "cause"],
        "trial_id": [f"t{i}" for i in range(4)], "params": [json.dumps({"lr": 0.01 * (i + 1)}) for i in range(4)],
        "true_value": true, "regret": oracle - true, "selected": [False, False, True, False],
    })  # fmt: skip
    rows = []
    for name, value in zip(NAMES, true, strict=True):
        for estimator in ESTIMATORS:
            estimate = value + rng.normal(0, 0.02)
            half = {"ips": 0.05, "snips": 0.012, "dr": 0.006}.get(estimator, np.nan)
            rows.append({
                "candidate": name, "estimator": estimator, "estimate": estimate,
                "low": estimate - half, "high": estimate + half, "true_value": value,
                "error": estimate - value, "ess": 900.0, "warning": "low ESS" if estimator == "ips" else "",
            })  # fmt: skip
    ope = pd.DataFrame(rows)
    candidates.to_csv(root / "candidates.csv", index=False)
    ope.to_csv(root / "ope.csv", index=False)
    stages = [{"name": s, "status": "done", "seconds": 1.5, "error": None} for s in STAGES]
    pipeline = {"config_path": "configs/pipeline.yaml", "seed": 11, "started": "2025-01-02T03:04:05",
                "finished": "2025-01-02T03:09:05", "stages": stages}  # fmt: skip
    summary = {
        "preset": "confounded", "n_users": 500, "n_items": 40, "slate_size": 1, "n_rounds": 20000,
        "uniform_rounds": 2000, "oracle_value": oracle, "logging_value": logging,
        "selected": {"candidate": "dr_jl", "method": "dr_jl", "true_value": 0.4410, "ope_dr": 0.4399},
        "truly_best": {"candidate": "dr_jl", "method": "dr_jl", "true_value": 0.4410},
        "selection_regret": 0.0, "selection_metric": "ope_dr",
        "selection_rules": {
            "ope_dr": {"method": "dr_jl", "value": 0.4399, "true_value": 0.4410, "regret": 0.0},
            "ope_dr_low": {"method": "ips", "value": 0.4012, "true_value": 0.4273, "regret": 0.0137},
        },
    }  # fmt: skip
    arm = {"spec": "logging", "users": 800, "visits": 1000, "impressions": 1000, "clicks": 203, "ctr": 0.203,
           "clicks_per_visit": 0.203, "exact_value": 0.2034}  # fmt: skip
    result = {
        "users": 2000, "alpha": 0.05, "seed": 3, "mode": "in-process", "exact_lift": EXACT_LIFT,
        "arms": {"a": {**arm, "label": "logging"}, "b": {**arm, "label": "dr_jl", "spec": "dr_jl", "clicks": 249,
                                                      "ctr": 0.249, "clicks_per_visit": 0.249, "exact_value": 0.2265}},
        "online": {**ONLINE, "relative_lift": 0.11, "relative_low": 0.05, "relative_high": 0.17,
                   "p_value": 0.0123, "mde": 0.0071},
        "offline": OFFLINE, "agreement": {"same_sign": True, "online_in_offline_interval": True},
    }  # fmt: skip
    curve = [{"gamma": g, "estimate": 0.4312, "lower": 0.4312 - d, "upper": 0.4312 + 2 * d,
              "lower_bootstrap": 0.42 - d, "upper_bootstrap": 0.445 + 2 * d}
             for g, d in [(1, 0), (2, 0.05), (5, 0.12)]]  # fmt: skip
    sensitivity = {"candidate": "dr_jl", "estimator": "snips", "unit": "clicks_per_round", "pscore": "logged",
                   "alpha": 0.05, "n_bootstrap": 200, "n_rounds": 4000, "true_value": 0.4410,
                   "true_gamma": {"gamma": 1.0, "standard_error": 0.0, "exact": True, "n_draws": 0}, "curve": curve}  # fmt: skip
    for name, payload in [("pipeline.json", pipeline), ("summary.json", summary), ("sensitivity.json", sensitivity),
                          ("abtest/result.json", result), ("causal_graph.json", graph)]:  # fmt: skip
        (root / name).write_text(json.dumps(payload))
    return candidates, ope


@pytest.fixture(scope="module")
def report(tmp_path_factory, graph):
    root = tmp_path_factory.mktemp("run")
    candidates, ope = make_run(root, graph)
    paths = write_report(root)
    return root, paths, candidates, ope


def table_row(markdown, first_cell, section):
    """The one row starting with ``first_cell`` in the section titled ``section``."""
    text = markdown.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"expected one table row for {first_cell!r}; got {rows}"
    return rows[0]


def test_every_figure_is_a_png_of_reasonable_size(report):
    root, paths, _, _ = report
    assert set(paths.figures) == FIGURES
    for name, path in paths.figures.items():
        assert path == root / "figures" / f"{name}.png"
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        height, width = matplotlib.image.imread(path).shape[:2]
        assert height > 100 and width > 100


def test_markdown_shows_each_candidate_with_its_dr_estimate(report):
    _, paths, candidates, ope = report
    markdown = paths.markdown.read_text(encoding="utf-8")
    for name in NAMES[:3]:
        row = table_row(markdown, name, POLICIES)
        dr = ope[(ope.candidate == name) & (ope.estimator == "dr")].iloc[0]
        truth = candidates.set_index("candidate").loc[name]
        assert interval(dr.estimate, dr.low, dr.high) in row
        assert four(truth.true_value) in row and four(truth.regret) in row
    assert table_row(markdown, "dr_jl", POLICIES).endswith("| yes |")
    assert table_row(markdown, "naive", POLICIES).endswith("|  |")


def test_ab_table_shows_online_and_offline_lifts_side_by_side(report):
    markdown = report[1].markdown.read_text(encoding="utf-8")
    online = interval(ONLINE["lift"], ONLINE["low"], ONLINE["high"])
    row = table_row(markdown, online, "A/B test: online vs. offline")
    assert interval(OFFLINE["lift"], OFFLINE["low"], OFFLINE["high"]) in row
    assert "0.0123" in row and four(0.0071) in row and four(EXACT_LIFT) in row


def test_ope_error_table_matches_the_inputs(report):
    _, paths, _, ope = report
    markdown = paths.markdown.read_text(encoding="utf-8")
    for estimator, group in ope.groupby("estimator"):
        row = table_row(markdown, estimator, "OPE error by estimator")
        assert four(group.error.abs().mean()) in row
        assert four(np.sqrt((group.error**2).mean())) in row
        covered = ((group.low <= group.true_value) & (group.true_value <= group.high)).sum()
        expected = f"{covered}/{len(group)}" if group.low.notna().all() else "n/a"
        assert f"| {expected} |" in row


def test_sensitivity_table_shows_the_bounds_and_whether_they_hold_the_exact_value(report):
    # Catches: bounds or Γ rows lost or swapped, coverage judged on the wrong bounds (at Γ = 1
    # the population bounds miss the exact value 0.4410 and the bootstrap ones hold it).
    markdown = report[1].markdown.read_text(encoding="utf-8")
    section = "Sensitivity to hidden confounding"
    assert table_row(markdown, "1", section).endswith("[0.4200, 0.4450] | yes |")
    assert "[0.3812, 0.5312]" in table_row(markdown, "2", section)
    assert "true Γ is 1 (exact)" in markdown and "4,000 held-out rounds" in markdown


def test_uniform_slice_errors_get_their_own_table(tmp_path, graph):
    _, ope = make_run(tmp_path, graph)
    uniform = ope.assign(estimate=ope.true_value + 0.001, error=0.001)
    uniform.loc[uniform.estimator == "dr", "error"] = -0.0031
    uniform.to_csv(tmp_path / "ope_uniform.csv", index=False)
    markdown = write_report(tmp_path).markdown.read_text(encoding="utf-8")
    section = markdown.split("### On the uniform-random slice (full overlap)\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    dr_row = next(line for line in section.splitlines() if line.startswith("| dr |"))
    assert f"| {four(0.0031)} |" in dr_row and f"| {four(-0.0031)} |" in dr_row
    assert "### On the held-out rounds of the confounded log" in markdown


def test_html_escapes_names_and_links_only_existing_figures(report):
    root, paths, _, _ = report
    page = paths.html.read_text(encoding="utf-8")
    assert "<script>" not in page and html.escape(SCRIPT) in page
    assert "<script>" not in paths.markdown.read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(FIGURES)
    assert all(src.startswith("figures/") and (root / src).is_file() for src in sources)
    assert "<style>" in page and "http" not in page


def test_failed_stages_leave_the_rest_of_the_report(tmp_path, graph):
    make_run(tmp_path, graph)
    write_report(tmp_path)  # a first report draws every figure
    (tmp_path / "abtest" / "result.json").unlink()
    (tmp_path / "ope.csv").unlink()
    (tmp_path / "sensitivity.json").unlink()
    pipeline = json.loads((tmp_path / "pipeline.json").read_text())
    errors = {"abtest": "RuntimeError: serve replica never became healthy",
              "ope": "ValueError: reward model diverged"}  # fmt: skip
    for stage in pipeline["stages"]:
        if stage["name"] in errors:
            stage.update(status="failed", error=errors[stage["name"]], seconds=None)
    (tmp_path / "pipeline.json").write_text(json.dumps(pipeline))
    paths = write_report(tmp_path)
    assert set(paths.figures) == {"regret", "causal_graph"}
    assert not (tmp_path / "figures" / "ab_lift.png").exists()  # stale figure removed
    for text in (
        paths.markdown.read_text(encoding="utf-8"),
        paths.html.read_text(encoding="utf-8"),
    ):
        assert "Not available: stage abtest did not complete" in text
        assert "Not available: stage ope did not complete" in text
        assert all(error in text for error in errors.values())
        assert "naive" in text and "Causal graph" in text
    assert "| abtest | failed | n/a | RuntimeError" in paths.markdown.read_text(encoding="utf-8")


def test_only_pipeline_json_still_writes_a_report(tmp_path):
    stages = [{"name": s, "status": "pending", "seconds": None, "error": None} for s in STAGES]
    (tmp_path / "pipeline.json").write_text(json.dumps(
        {"config_path": "c.yaml", "seed": 0, "started": "2025-01-01T00:00:00", "finished": None, "stages": stages}
    ))  # fmt: skip
    paths = write_report(tmp_path)
    assert paths.figures == {} and paths.html.is_file()
    assert paths.markdown.read_text(encoding="utf-8").count("Not available") >= 5


def corrupt_candidates(root):
    frame = pd.read_csv(root / "candidates.csv").drop(columns="regret")
    frame.to_csv(root / "candidates.csv", index=False)


def corrupt_ope(root):
    frame = pd.read_csv(root / "ope.csv")
    frame["estimate"] = frame["estimate"].astype(object)
    frame.loc[2, "estimate"] = "high"
    frame.to_csv(root / "ope.csv", index=False)


def corrupt_json(name, change):
    def corrupt(root):
        data = json.loads((root / name).read_text())
        change(data)
        (root / name).write_text(json.dumps(data))

    return corrupt


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (corrupt_candidates, r"candidates\.csv: missing column\(s\) \['regret'\]"),
        (corrupt_ope, r"ope\.csv: column 'estimate' must be numeric; got 'high' in data row 3"),
        (corrupt_json("abtest/result.json", lambda d: d["online"].pop("p_value")), r"abtest/result\.json: missing field 'online\.p_value'"),
        (corrupt_json("abtest/result.json", lambda d: d.update(arms=None)), r"abtest/result\.json: field 'arms' must be an object; got None"),
        (corrupt_json("summary.json", lambda d: d.update(n_users="many")), r"summary\.json: field 'n_users' must be int; got 'many'"),
        (corrupt_json("pipeline.json", lambda d: d["stages"][1].pop("status")), r"pipeline\.json: stages\[1\]: missing field 'status'"),
        (corrupt_json("causal_graph.json", lambda d: d["edges"].append(["click"])), r"causal_graph\.json: edges\[12\] must be \[source, target\]"),
        (lambda root: (root / "summary.json").write_text("{not json"), r"summary\.json: not valid JSON"),
        (corrupt_json("sensitivity.json", lambda d: d["curve"][1].pop("upper")), r"sensitivity\.json: curve\[1\]: missing field 'upper'"),
    ],
)  # fmt: skip
def test_malformed_inputs_name_the_file_and_field(tmp_path, graph, corrupt, match):
    make_run(tmp_path, graph)
    corrupt(tmp_path)
    with pytest.raises(DataError, match=match):
        write_report(tmp_path)


def test_layout_puts_every_edge_from_a_lower_to_a_higher_layer(graph):
    position = layered_layout(graph)
    assert set(position) == {node["name"] for node in graph["nodes"]}
    assert len(set(position.values())) == len(position)  # no two boxes on one spot
    for source, target in graph["edges"]:
        assert position[source][0] < position[target][0]
    roots = {node["name"] for node in graph["nodes"]} - {target for _, target in graph["edges"]}
    assert {name for name, (layer, _) in position.items() if layer == 0} == roots


def test_causal_graph_draws_every_node_and_edge(graph):
    ax = Figure().add_subplot()
    boxes = draw_causal_graph(ax, graph)
    labels = {box.get_text().replace("\n", " ") for box in boxes.values()}
    assert labels == {node["label"] for node in graph["nodes"]}
    dashed = {name for name, box in boxes.items() if box.get_bbox_patch().get_linestyle() != "-"}
    assert dashed == {node["name"] for node in graph["nodes"] if not node["observed"]}
    assert len(ax.texts) - len(boxes) == len(graph["edges"])  # one arrow annotation per edge


@pytest.mark.parametrize(
    "edges, match",
    [([["a", "b"], ["b", "a"]], "cycle"), ([["a", "z"]], "unknown 'z'")],
)
def test_layout_rejects_cycles_and_unknown_nodes(edges, match):
    graph = {"nodes": [{"name": "a"}, {"name": "b"}], "edges": edges}
    with pytest.raises(DataError, match=match):
        layered_layout(graph)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.418349, "0.4183"), (-2.5, "-2.5000"), (0, "0.0000"), (1.23456e-5, "1.235e-05"),
     (123456.0, "1.235e+05"), (float("nan"), "n/a"), (None, "n/a")],
)  # fmt: skip
def test_format_number(value, expected):
    assert format_number(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(0.012345, "0.0123"), (1e-4, "0.0001"), (3e-7, "<1e-4"), (None, "n/a")]
)
def test_format_p_value(value, expected):
    assert format_p_value(value) == expected


def test_the_selection_section_lists_every_rule_with_its_regret(report):
    # Catches: the rules' table missing, a rule dropped, or a value from the wrong field.
    _, paths, _, _ = report
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert table_row(markdown, "ope_dr_low", "Selection") == (
        "| ope_dr_low | ips | 0.4012 | 0.4273 | 0.0137 |"
    )
    assert table_row(markdown, "ope_dr", "Selection").startswith("| ope_dr | dr_jl | 0.4399 |")
