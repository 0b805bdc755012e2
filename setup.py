"""Maps the root folders into the ``streamgen`` namespace (docs/architecture.md, "Layout").

``kernels/``, ``server/`` and ``training/`` are installed as ``streamgen.kernels``,
``streamgen.server`` and ``streamgen.training``; ``client/streamgen_client`` is installed
as the top-level ``streamgen_client``. No top-level ``kernels``/``server``/``training``
package is ever installed (diffusers probes for a package named ``kernels``).
"""
import os

from setuptools import setup

ROOTS = {
    "streamgen": "streamgen",
    "streamgen.kernels": "kernels",
    "streamgen.server": "server",
    "streamgen.training": "training",
    "streamgen_client": "client/streamgen_client",
}


def _packages():
    packages, package_dir = [], {}
    for name, folder in ROOTS.items():
        package_dir[name] = folder
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
            if "__init__.py" in filenames:
                rel = os.path.relpath(dirpath, folder)
                packages.append(name if rel == "." else name + "." + rel.replace(os.sep, "."))
    return packages, package_dir


_PACKAGES, _PACKAGE_DIR = _packages()

setup(
    packages=_PACKAGES,
    package_dir=_PACKAGE_DIR,
    package_data={
        "streamgen": ["py.typed", "weights/*.safetensors", "weights/*.json", "weights/*.md", "weights/*/*"],
        "streamgen.server": ["static/*"],
        "streamgen_client": ["py.typed"],
    },
    include_package_data=True,
)
