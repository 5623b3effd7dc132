"""Docs that run: every ``mosear`` command the README and docs/ show is valid as written.

Each command (a line of a shell code block, backslash continuations joined, or an inline code span)
is parsed with the subcommand's own argument parser; a stage command's config (its ``--config`` file,
when it is in the repository, plus its ``key=value`` overrides) is checked against the stage's schema
(the config class's JSON schema), and fully validated by the config class when every path it names
exists here (paths on a cluster's shared storage, ``/data/...``, cannot be). ``mosear run`` commands
build the pipeline's requests and validate every stage. The cheap ones (``--help-config``,
``--list-stages``) run. ``flows/prefect.yaml``'s deployments are checked the same way.

Commands run from the repository root; one submitted with ``cluster/runtime_env.yaml`` runs in that
runtime env's ``working_dir`` (``--config train-7b.yaml`` is ``cluster/configs/train-7b.yaml``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
import yaml

from mosear.cli import COMMANDS, build_command_parser, main
from mosear.config import _deep_merge, load_config, parse_overrides
from mosear.orchestrate.registry import STAGES

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CLUSTER_WORKDIR = REPO / yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())["working_dir"]
SHELL = {"", "bash", "sh", "shell", "console"}
CHEAP = {"--help-config", "--list-stages"}
PLACEHOLDER = re.compile(r"<[a-z]|\.\.\.|\bPATH\b|\|")  # `mosear <stage> ...`, `shard | mine`


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    argv: tuple[str, ...]  # after `mosear`
    cluster: bool  # submitted with cluster/runtime_env.yaml
    mention: bool = False  # prose naming a command (`mosear eval` evaluates ...): only the name is checked

    def __str__(self) -> str:
        return f"{self.where}: mosear {' '.join(self.argv)}"


def _mosear_argv(tokens: list[str]) -> list[str] | None:
    """The arguments after ``mosear`` / ``python -m mosear[.cli]`` in a shell line, up to ``&&``/``;``/``|``."""
    for i, tok in enumerate(tokens):
        if tok == "mosear":
            rest = tokens[i + 1:]
        elif re.fullmatch(r"python3?", tok) and tokens[i + 1:i + 3] in (["-m", "mosear"], ["-m", "mosear.cli"]):
            rest = tokens[i + 3:]
        else:
            continue
        for j, t in enumerate(rest):
            if t in ("&&", "||", ";", "|"):
                return rest[:j]
        return rest
    return None


def _commands_in(path: Path, root: Path = REPO) -> list[DocCommand]:
    out: list[DocCommand] = []
    fence: str | None = None
    pending, start = "", 0
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{path.relative_to(root)}:{no}"
        m = re.match(r"\s*```(\w*)", line)
        if m:
            fence = None if fence is not None else m.group(1)
            continue
        if fence is None:  # prose: inline code spans that are whole commands
            for span in re.findall(r"`([^`]+)`", line):
                if re.match(r"(python3? -m )?mosear(\.cli)? ", span) and not PLACEHOLDER.search(span):
                    argv = _mosear_argv(shlex.split(span))
                    if argv:
                        out.append(DocCommand(where, tuple(argv), "runtime_env" in span, mention=len(argv) == 1))
            continue
        if fence not in SHELL:
            continue
        if not pending:
            start = no
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical, pending = pending, ""
        if not re.search(r"(^|\s)(python3? -m )?mosear(\.cli)?(\s|$)", logical):  # formulas, layouts, other tools
            continue
        try:
            tokens = shlex.split(logical, comments=True)
        except ValueError as exc:
            raise AssertionError(f"{path.relative_to(root)}:{start}: not a shell line: {exc}") from None
        argv = _mosear_argv(tokens)
        if argv is not None and not PLACEHOLDER.search(" ".join(argv)):
            cluster = "runtime_env" in logical or "$RE" in logical
            out.append(DocCommand(f"{path.relative_to(root)}:{start}", tuple(argv), cluster))
    return out


COMMANDS_IN_DOCS = [c for doc in DOCS for c in _commands_in(doc)]


def test_the_docs_show_commands_of_every_stage():
    shown = {c.argv[0] for c in COMMANDS_IN_DOCS if c.argv}
    assert set(STAGES) | {"run", "report"} <= shown, shown


def _config_file(cmd: DocCommand, name: str | None) -> Path | None:
    """The ``--config`` file in the repository, or None for a user's own file (``my_shard.yaml``)."""
    if name is None:
        return None
    bases = ([CLUSTER_WORKDIR] if cmd.cluster else []) + [REPO]
    return next((b / name for b in bases if (b / name).is_file()), None)


def _absent_paths(value) -> list[str]:
    """Absolute paths in a config value that do not exist on this machine (a cluster's storage)."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in _absent_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _absent_paths(v)]
    if isinstance(value, str):
        path = value.split("=", 1)[-1]  # checkpoints may be name=path
        return [path] if path.startswith("/") and not Path(path).exists() else []
    return []


def check_stage_config(spec, data: dict, *, complete: bool, where: str) -> None:
    """``data`` against the stage's schema; ``complete``: it is the whole config (required fields too)."""
    schema = spec.config_cls().model_json_schema()
    errors = [e for e in jsonschema.Draft202012Validator(schema).iter_errors(data)
              if complete or e.validator != "required"]
    if isinstance(data.get("model"), dict) and "$ref" not in str(schema["properties"].get("model")):
        # train and eval keep `model:` as a dict that ModelConfig validates when the model is built
        from mosear.model.config import ModelConfig

        errors += [e for e in jsonschema.Draft202012Validator(ModelConfig.model_json_schema()).iter_errors(data["model"])
                   if e.validator != "required"]
    assert not errors, f"{where}: {spec.name} config does not match its schema:\n" + "\n".join(
        f"  {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors)


def _check_run(cmd: DocCommand, ns, tmp_path: Path) -> None:
    from mosear.orchestrate.cli import _stage_overrides
    from mosear.orchestrate.dispatch import prepare_all
    from mosear.orchestrate.workdir import pipeline_requests

    config = ns.config if ns.config and (REPO / ns.config).is_file() else None  # pipeline.yaml: a user's file
    overrides = _stage_overrides(config, ns.overrides)
    corpus = ns.corpus if ns.corpus and (REPO / ns.corpus).exists() else "datasets/samples/corpus.yaml"
    stages = [s.strip() for s in ns.stages.split(",") if s.strip()]
    prepare_all(pipeline_requests(corpus, str(tmp_path / "work"), stages, overrides=overrides))


@pytest.mark.parametrize("cmd", COMMANDS_IN_DOCS, ids=str)
def test_doc_command_is_valid_as_written(cmd: DocCommand, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert cmd.argv and cmd.argv[0] in COMMANDS, f"{cmd}: no such command (commands: {list(COMMANDS)})"
    name, args = cmd.argv[0], list(cmd.argv[1:])
    if cmd.mention:
        return
    if CHEAP & set(args):
        assert main([name, *args]) == 0, f"{cmd}: {capsys.readouterr().err[-2000:]}"
        return
    try:
        ns = build_command_parser(name).parse_intermixed_args(args)
    except SystemExit as exc:
        raise AssertionError(f"{cmd}: the command line does not parse ({capsys.readouterr().err.strip()})") from exc
    if name == "run":
        _check_run(cmd, ns, tmp_path)
        return
    if name not in STAGES:
        return
    spec = STAGES[name]
    config = _config_file(cmd, ns.config)
    data = (yaml.safe_load(config.read_text()) or {}) if config else {}
    data = _deep_merge(data, parse_overrides(ns.overrides))
    complete = ns.config is None or config is not None
    check_stage_config(spec, data, complete=complete, where=str(cmd))
    if complete and not _absent_paths(data):  # every path it names is here: the config class decides
        load_config(spec.config_cls(), config, ns.overrides)


def _deployments() -> list[dict]:
    return yaml.safe_load((REPO / "flows" / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("dep", _deployments(), ids=lambda d: d["name"])
def test_prefect_deployment_is_valid(dep, tmp_path, monkeypatch):
    """Each deployment's entrypoint is a flow, and its parameters are valid for it and its stages."""
    import importlib.util

    from prefect import Flow

    from mosear.orchestrate.dispatch import prepare_all
    from mosear.orchestrate.workdir import pipeline_requests

    monkeypatch.chdir(REPO)  # prefect deploy runs from the repository root
    path, attr = dep["entrypoint"].split(":")
    module_spec = importlib.util.spec_from_file_location(f"mosear_doc_flows_{Path(path).stem}", REPO / path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    flow = getattr(module, attr)
    assert isinstance(flow, Flow)
    params = flow.validate_parameters(dep.get("parameters") or {})
    if flow.name == "mosear-pipeline":
        params = {**params, "workdir": str(tmp_path / params.get("workdir", "w"))}
        prepare_all(pipeline_requests(params["corpus"], params["workdir"], params.get("stages", list(STAGES)),
                                      overrides=params.get("overrides")))
    else:
        spec = STAGES[flow.name.removeprefix("mosear-")]
        load_config(spec.config_cls(), None, params["config"])


def test_a_wrong_command_is_caught(tmp_path, monkeypatch, capsys):
    """The checks fail on docs/cluster.md's old step 4 (``benchmarks=/data/mined``: not a list)."""
    doc = tmp_path / "x.md"
    doc.write_text("```bash\nray job submit $RE -- python -m mosear.cli eval \\\n"
                   "    checkpoints=[/data/a/adapter] benchmarks=/data/mined output=/data/reports\n```\n")
    [cmd] = _commands_in(doc, root=tmp_path)
    assert cmd.cluster and cmd.argv[0] == "eval"
    with pytest.raises(AssertionError, match=r"benchmarks: '/data/mined' is not of type 'array'"):
        test_doc_command_is_valid_as_written(cmd, tmp_path, monkeypatch, capsys)
