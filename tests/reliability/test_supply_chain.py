"""Static analysis and the dependency audit (issue 8), run with the rest of the suite; ``make security`` runs the same.

- bandit over ``edge_runtime`` and ``cloud`` with the ``[tool.bandit]`` config of ``pyproject.toml`` reports
  nothing: each finding is fixed, or suppressed on its line as ``# nosec BXXX # reason``.
- pip-audit finds no known vulnerability in the edge requirements (the pinned venv of the Greengrass app
  component). It needs the PyPI vulnerability service: where that cannot be reached and nothing was audited,
  the test is skipped with that reason - it never passes as a clean audit.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("edge_runtime", "cloud")
FILES = sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))
EDGE_REQUIREMENTS = sorted(REPO.glob("greengrass/*/requirements*.txt"))
# Skipped for the whole tree in [tool.bandit]; anything else is decided line by line.
GLOBAL_SKIPS = {"B404": "every `import subprocess`; each call is judged on its own line (B603/B607)"}
# Bandit reads every word after "nosec" up to the next "#" as a test name, so the reason follows a second "#".
JUSTIFIED_NOSEC = re.compile(r"#\s*nosec (?P<ids>B\d{3}(?: B\d{3})*) # (?P<reason>\S.{7,})$")


def _tool(module: str, extra: str = "dev") -> list[str]:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: pip install -c constraints.txt -e '.[{extra}]'")
    return [sys.executable, "-m", module]


def unjustified_nosecs(source: str, where: str) -> list[str]:
    """Every ``nosec`` comment that lacks a rule id or a reason (bandit only looks at comments, not strings)."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        at = re.search(r"#\s*nosec", tok.string, re.IGNORECASE)
        if at and not JUSTIFIED_NOSEC.fullmatch(tok.string[at.start():]):
            out.append(f"{where}:{tok.start[0]}: {tok.string.strip()!r} (write `# nosec BXXX # reason`)")
    return out


def test_the_nosec_check_catches_a_bare_or_unexplained_nosec():
    # Given comments bandit would honour without saying why, When checked, Then each one is reported
    bad = ["x = f()  # nosec\n", "x = f()  #nosec\n", "x = f()  # NOSEC\n", "x = f()  # nosec B603\n",
           "x = f()  # nosec: B603\n", "x = f()  # nosec B603 #\n", "x = f()  # nosec B603 # ok\n",
           "x = f()  # nosec subprocess_without_shell_equals_true # named, not numbered\n",
           "x = f()  # nosec B603 - the reason would be read as test names\n",
           "x = f()  # see below # nosec B603\n"]
    for line in bad:
        assert len(unjustified_nosecs(line, "x")) == 1, line
    # and the justified forms pass; "nosec" inside a string is not a comment (bandit ignores it too)
    good = ("x = f()  # nosec B603 # fixed argv, no shell\n"
            "y = g()  # nosec B603 B607 # fixed git argv from PATH\n"
            "s = '# nosec'\n")
    assert unjustified_nosecs(good, "x") == []


def test_every_nosec_names_its_rule_and_a_reason():
    problems = [p for f in FILES for p in unjustified_nosecs(f.read_text(encoding="utf-8"), str(f.relative_to(REPO)))]
    assert problems == [], "\n".join(problems)


def test_bandit_skips_only_the_reviewed_rules():
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["bandit"]
    assert set(config.get("skips", [])) == set(GLOBAL_SKIPS)
    assert not config.get("tests") and not config.get("exclude_dirs")


def test_bandit_reports_nothing_on_the_code():
    # Given the repository's bandit config, When bandit scans edge_runtime and cloud,
    # Then it reports no finding and no file it could not read, and it did scan every file
    proc = subprocess.run([*_tool("bandit"), "-q", "-c", "pyproject.toml", "-f", "json", "-r", *PACKAGES],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"bandit exited {proc.returncode} without a JSON report:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    findings = [f"{r['filename']}:{r['line_number']}: {r['test_id']} [{r['issue_severity']}] {r['issue_text']}"
                for r in report["results"]]
    assert findings == [], ("bandit findings (fix them, or add `# nosec BXXX # reason` on the line):\n"
                            + "\n".join(findings))
    assert report["errors"] == [], f"files bandit could not scan: {report['errors']}"
    scanned = {(REPO / name).resolve() for name in report["metrics"] if name != "_totals"}
    assert {f.resolve() for f in FILES} <= scanned
    assert proc.returncode == 0, proc.stderr[-2000:]


def _audit_or_skip(requirements: Path, out: Path) -> list[dict]:
    """pip-audit's dependency list for ``requirements``; skips the test when the service could not be reached."""
    rel = requirements.relative_to(REPO)
    # --no-deps --disable-pip: the file pins its whole closure, so pip-audit checks exactly those pins
    # instead of resolving them again in a scratch venv (seconds instead of a pip install)
    cmd = [*_tool("pip_audit"), "-r", str(requirements), "--no-deps", "--disable-pip", "--format", "json",
           "--output", str(out), "--progress-spinner", "off", "--timeout", "10"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.skip(f"NOT AUDITED: pip-audit got no answer from the vulnerability service within 240 s for {rel}")
    if not out.is_file():
        unreachable = re.search(r"ConnectionError|NameResolutionError|Max retries exceeded|timed out|"
                                r"Temporary failure in name resolution|Network is unreachable", proc.stderr)
        if unreachable:
            pytest.skip(f"NOT AUDITED: pip-audit could not reach the vulnerability service for {rel} "
                        f"({unreachable.group(0)}); run `make security` with network access")
        pytest.fail(f"pip-audit exited {proc.returncode} without a report for {rel}:\n{proc.stderr[-3000:]}")
    deps = json.loads(out.read_text(encoding="utf-8"))["dependencies"]
    if not deps:
        pytest.fail(f"pip-audit read no requirement from {rel}")
    if all("skip_reason" in d for d in deps):
        pytest.skip(f"NOT AUDITED: pip-audit could not audit any of the {len(deps)} pins of {rel}, i.e. the "
                    f"vulnerability service was not reachable (first reason: {deps[0]['skip_reason']}); "
                    f"this is no clean audit - run `make security` with network access")
    return deps


@pytest.mark.parametrize("requirements", EDGE_REQUIREMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_edge_requirements_have_no_known_vulnerabilities(requirements: Path, tmp_path):
    # Given the pinned edge requirements, When pip-audit checks them against the PyPI advisories,
    # Then no pin has a known vulnerability, and every pin was audited
    deps = _audit_or_skip(requirements, tmp_path / "audit.json")
    vulns = [f"{d['name']}=={d['version']}: {' / '.join([v['id'], *v.get('aliases', [])])} "
             f"(fixed in {', '.join(v.get('fix_versions', [])) or 'no release yet'})"
             for d in deps if "skip_reason" not in d for v in d.get("vulns", [])]
    assert vulns == [], "known vulnerabilities in the edge requirements:\n" + "\n".join(vulns)
    # some pins audited and others not: those have no PyPI record at that version (a typo or a private name)
    unaudited = [f"{d['name']}: {d['skip_reason']}" for d in deps if "skip_reason" in d]
    assert unaudited == [], "pins pip-audit could not audit while others were:\n" + "\n".join(unaudited)


def test_the_edge_requirements_are_found():
    # one pin file per supported interpreter (greengrass/app/requirements-py310.txt ...), each audited on its own
    pin_files = sorted((REPO / "greengrass" / "app").glob("requirements-py3*.txt"))
    assert pin_files and set(pin_files) <= set(EDGE_REQUIREMENTS)
