"""Packaging for eib. Metadata comes from settings.ini (nbdev 2); pinned runtime requirements from requirements.txt."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
cfg = ConfigParser(delimiters=["="])
cfg.read(here / "settings.ini")
c = cfg["DEFAULT"]


def _requirements(fname="requirements.txt"):
    "Lines of a pip requirements file, without comments, options or blank lines."
    p = here / fname
    if not p.exists(): return []
    lines = (l.split("#")[0].strip() for l in p.read_text().splitlines())
    return [l for l in lines if l and not l.startswith("-")]


setuptools.setup(
    name=c["lib_name"],
    version=c["version"],
    description=c["description"],
    author=c["author"],
    author_email=c["author_email"],
    license="MIT",
    keywords=c["keywords"].split(),
    python_requires=">=" + c["min_python"],
    packages=setuptools.find_packages(include=[c["lib_path"], c["lib_path"] + ".*"]),
    include_package_data=True,
    # The pinned set is installed by `make setup`; declaring it here as well would let pip pull a
    # CUDA torch build on a fresh machine, so only the light core is declared.
    install_requires=["numpy", "pandas", "tqdm", "fastcore<2"],
    entry_points={
        "console_scripts": [s.strip() for s in c.get("console_scripts", "").split("\n") if s.strip()],
        "nbdev": [f"{c['lib_path']}={c['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
