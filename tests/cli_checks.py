"""Assertions shared by the CLI error tests (importable because tests/conftest.py puts tests/ on sys.path)."""

from esseg.cli import main


def run_error(capsys, argv) -> str:
    """Run ``esseg argv``; assert exit 2 and exactly one ``esseg: error:`` line, no traceback; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("esseg: error:")]
    assert len(errors) == 1, err
    return errors[0]
