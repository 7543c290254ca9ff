"""Packaging for Insights: the ``hostd`` daemon and the ``sandbox`` module runtime."""
from setuptools import find_packages, setup

setup(
    name="insights",
    version="0.1.0",
    description="A runtime for small, pluggable learning-analytics modules fed by streaming events",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="AGPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["hostd", "hostd.*", "sandbox", "sandbox.*"]),
    include_package_data=True,
    package_data={"hostd": ["templates/*.html", "assets/*"]},
    install_requires=[
        "pluggy>=1.5,<2",
        "falcon>=4.0,<5",
        "gunicorn>=23,<28",
        "pymongo>=4.9,<5",
        "msgpack>=1.0.8,<2",
        "pyzmq>=26,<28",
        "numpy>=1.26,<3",
        "nx-27017==0.8.1",
        "click>=8.1,<9",
        "croniter>=2.0,<8",
        "Jinja2>=3.1,<4",
        "matplotlib>=3.8,<4",
        "psutil>=5.9,<8",
        "mongoquery>=1.4,<2",
        "requests>=2.31,<3",
        "tqdm>=4.66,<5",
        "watchfiles>=0.21,<2",
        "prometheus-client>=0.20,<1",
        # sandbox confinement: young, thin bindings (Landlock syscalls; ctypes over libseccomp2)
        "landlockpy==0.2.*",
        "pyseccomp==0.1.*",
    ],
    extras_require={
        "test": [
            # schemathesis 4.32 fails under pytest 9.2 (no Function._nodeid); 9.0 and 9.1 work
            "pytest>=8,<9.2",
            "pytest-timeout>=2.3,<3",
            "tincan==1.0.0",
            # second oracle of the tincan data layer; its docs table pins these exact versions
            "ralph-malph==5.1.0",
            "polyfactory==3.5.0",
            # the OpenAPI document: checked against the running API, and as OpenAPI 3.1
            "schemathesis>=4.3,<5",
            "hypothesis>=6.100,<7",
            "openapi-spec-validator>=0.7,<0.10",
            # drives the Debian chromium through chromium-driver in tests/test_dashboard_browser.py
            "selenium>=4.20,<5",
        ],
    },
    entry_points={
        "console_scripts": ["hostd = hostd.cli:main"],
        "pytest11": ["insights = sandbox.pytest_plugin"],
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "License :: OSI Approved :: GNU Affero General Public License v3 or later (AGPLv3+)",
    ],
)
