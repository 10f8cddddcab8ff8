"""Packaging beside pyproject.toml: the config groups (conf/ at the repository's root, where
users and tests read them) ship inside the package as `trainer_cli/conf`, so an installed
`train` finds them from any folder. pyproject.toml alone cannot add one mapped folder to the
packages it finds."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages("src"), "trainer_cli.conf"],
    package_dir={"": "src", "trainer_cli.conf": "conf"},
    package_data={"trainer_cli.conf": ["**/*.yaml"]},
)
