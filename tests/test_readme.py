"""The README's runnable examples run and say what the README says they give."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def test_named_tensor_example_runs_and_its_comments_hold():
    ns: dict = {}
    exec(python_blocks()[0], ns)
    assert tuple(a.name for a in ns["scores"].axes) == ("position", "head", "key_position")
    assert tuple(a.name for a in ns["probs"]["position", 3].axes) == ("head", "key_position")
    # causal: position 3 puts no weight on later key positions
    row = np.asarray(ns["probs"]["position", 3].array)
    np.testing.assert_allclose(row[:, 4:], 0.0)
    np.testing.assert_allclose(row.sum(-1), 1.0, rtol=1e-5)


def test_plain_code_example_names_its_output():
    block = next(b for b in python_blocks() if "def mlp(x, w1, w2)" in b)
    setup = (
        "import jax, jax.numpy as jnp, namax as nx\n"
        "from jax.sharding import AxisType\n"
        "mesh = jax.make_mesh((4, 2), ('data', 'model'), axis_types=(AxisType.Auto,) * 2)\n"
        "x, w1, w2 = jnp.ones((8, 32)), jnp.ones((32, 64)) * 0.01, jnp.ones((64, 32)) * 0.01\n"
    )
    code = setup + block.split("nx.infer_names")[0]
    ns: dict = {}
    exec(code, ns)
    out = ns["f"](ns["x"], ns["w1"], ns["w2"])
    assert out.axis_names == ("batch", "embed")
    np.testing.assert_allclose(out.array, ns["mlp"](ns["x"], ns["w1"], ns["w2"]), rtol=1e-5)
