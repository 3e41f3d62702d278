"""The shipped examples live in ``flows``, installed as a namespace package: a user's own
``flows`` package (the natural home of their services) wins over it instead of being shadowed,
and ``flows.shop:…`` named by the examples and by stored sagas still imports everywhere else."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.support import saga_cli

SERVICE = '''
from actors import Service, handles


class Greeter(Service):
    @handles("greet")
    def greet(self, command):
        return {"hello": command.payload["name"]}
'''

FLOW = """\
saga: greeting
version: 1
services:
  greeter: flows.greeting:Greeter
steps:
  - {name: greet, service: greeter, action: greet, effects: none}
"""


def test_a_users_flows_package_is_imported_instead_of_the_examples(tmp_path: Path) -> None:
    package = tmp_path / "flows"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "greeting.py").write_text(textwrap.dedent(SERVICE))
    (tmp_path / "greeting.yaml").write_text(FLOW)

    done = saga_cli("run", "greeting.yaml", "--input", '{"name": "Ada"}', "--json",
                    "--store", f"sqlite:///{tmp_path / 'sagas.db'}", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert result["context"]["steps"]["greet"] == {"hello": "Ada"}


def test_the_examples_still_import_as_flows_dot_module(tmp_path: Path) -> None:
    done = saga_cli("validate", str(Path(__file__).resolve().parent.parent / "flows"
                                    / "order_inventory.yaml"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
