"""Where a result came from: the commit, and whether the code that made it was the commit's."""

import subprocess

from repro.infra import provenance


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_an_edited_working_tree_is_recorded_dirty_with_a_digest_of_the_edit(tmp_path, monkeypatch):
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(provenance, "REPOSITORY", tmp_path)
    monkeypatch.delenv("REPRO_GIT_BRANCH", raising=False)
    clean = provenance.git_state()
    assert clean["git_dirty"] is False and clean["git_diff"] is None
    assert len(clean["git_commit"]) == 40
    (tmp_path / "code.py").write_text("x = 2\n")
    edited = provenance.git_state()
    (tmp_path / "code.py").write_text("x = 3\n")
    other = provenance.git_state()
    assert edited["git_dirty"] is True and edited["git_commit"] == clean["git_commit"]
    assert len(edited["git_diff"]) == 16 and edited["git_diff"] != other["git_diff"]


def test_outside_a_checkout_nothing_is_claimed(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "REPOSITORY", tmp_path)
    monkeypatch.delenv("REPRO_GIT_BRANCH", raising=False)
    assert provenance.git_state() == {
        "git_commit": None,
        "git_branch": None,
        "git_dirty": None,
        "git_diff": None,
    }
