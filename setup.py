"""Build Nubis: generate the ABI's Python code from proto/ and compile ext/.

The folder `kernel/` is installed as the package `nubis`, `services/` as
`nubis.services` and `bench/` as `nubis.bench`. The protobuf modules are
generated into `kernel/v1/` each time setup.py runs, so a fresh checkout
needs only `pip install .`. The Cython hot paths are optional: when they cannot be
compiled the install goes on and the pure-Python twins are used.
"""

import glob
import os
import re
import shutil
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "proto")
GEN_DIR = os.path.join(HERE, "kernel")


def generate_abi() -> None:
    """Run protoc over proto/nubis/v1 into kernel/v1 (the package nubis.v1)."""
    import grpc_tools
    from grpc_tools import protoc

    # protoc names the output after the proto path (nubis/v1/...), so it
    # writes into a scratch tree and the files are moved under kernel/v1.
    out = os.path.join(HERE, "build", "abi")
    os.makedirs(out, exist_ok=True)
    protos = sorted(glob.glob(os.path.join(PROTO_DIR, "nubis", "v1", "*.proto")))
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
            f"--python_out={out}", f"--pyi_out={out}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on " + " ".join(protos))

    target = os.path.join(GEN_DIR, "v1")
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "__init__.py"), "w") as f:
        f.write('"""The Nubis ABI, generated from proto/ by setup.py; '
                'do not edit."""\n')
    for path in glob.glob(os.path.join(out, "nubis", "v1", "*")):
        os.replace(path, os.path.join(target, os.path.basename(path)))


class OptionalBuildExt(build_ext):
    """Compile ext/ where possible; a failure leaves the pure twins in use."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any compiler failure
            print(f"nubis: hot paths not compiled ({e}); using pure Python",
                  file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001 - any compiler failure
            print(f"nubis: {ext.name} not compiled ({e}); using pure Python",
                  file=sys.stderr)


def extensions() -> list:
    """One extension per ext/*.pyx, installed as nubis._ext.<name>.

    A module Cython cannot compile is left out with a message, as one the
    C compiler fails on is (OptionalBuildExt): its pure twin stands in.
    """
    if os.environ.get("NUBIS_NO_EXT") == "1":
        return []
    sources = sorted(glob.glob(os.path.join("ext", "*.pyx")))
    if not sources:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("nubis: Cython missing; using pure Python", file=sys.stderr)
        return []

    # Cython looks for the .pxd of nubis._ext.<name> as nubis/_ext/<name>.pxd
    # on its include path, not beside the .pyx, so the .pxd files are staged
    # under that path.
    staged = os.path.join(HERE, "build", "pxd")
    os.makedirs(os.path.join(staged, "nubis", "_ext"), exist_ok=True)
    for pxd in glob.glob(os.path.join("ext", "*.pxd")):
        shutil.copy2(pxd, os.path.join(staged, "nubis", "_ext"))

    exts = []
    for source in sources:
        name = os.path.splitext(os.path.basename(source))[0]
        ext = Extension(f"nubis._ext.{name}", [source],
                        extra_compile_args=["-O3"])
        try:
            exts += cythonize([ext], language_level=3, quiet=True,
                              include_path=[staged],
                              compiler_directives={"boundscheck": False,
                                                   "wraparound": False})
        except Exception as e:  # noqa: BLE001 - Cython's CompileError and kin
            print(f"nubis: {ext.name} not cythonized ({e}); using pure Python",
                  file=sys.stderr)
    return exts


def read_version() -> str:
    with open(os.path.join(HERE, "kernel", "version.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


# Every build step (metadata, wheel, editable) needs the package nubis.v1 to
# exist, so the ABI is generated before setup() looks at the packages.
generate_abi()

BENCH = [
    "redis[hiredis]>=5",
    "nats-py>=2.6",
    "matplotlib>=3.7",
    "rich>=13",
    "uvicorn>=0.30",
]

setup(
    name="nubis",
    version=read_version(),
    description="A minimal cloud operating system kernel: listen, spawn, "
                "queue and blob as cloud calls over gRPC and ZeroMQ.",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    package_dir={
        "nubis": "kernel",
        "nubis.services": "services",
        "nubis.bench": "bench",
    },
    packages=[
        "nubis", "nubis.v1", "nubis._ext", "nubis.services", "nubis.bench",
        "nubis.services.mapreduce", "nubis.services.mail",
        "nubis.services.http", "nubis.services.console",
        *[f"nubis.{p}" for p in (
            "queue", "blob", "transport", "client", "cli", "handlers", "proc", "net",
            "journal",
        )],
    ],
    package_data={"nubis.v1": ["*.pyi"], "nubis": ["py.typed"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    install_requires=[
        "grpcio>=1.66",
        "grpcio-health-checking>=1.66",
        "grpcio-reflection>=1.66",
        "protobuf>=5.28",
        "pyzmq>=26",
        "uvloop>=0.19",
        "click>=8.1",
        "hdrhistogram>=0.10",
        "sortedcontainers>=2.4",
        "httptools>=0.6",
        "aiosmtpd>=1.4",
    ],
    extras_require={
        "bench": BENCH,
        # The tests run the benchmark suite too, so they need its peers'
        # clients and the plotting library.
        "test": [
            "pytest>=8",
            "pytest-benchmark>=4",
            "pytest-timeout>=2.3",
            "pytest-asyncio>=0.24",
            "hypothesis>=6",
            "grpcio-tools>=1.66",
            "ruff>=0.5",
            "aiosmtpd>=1.4",
            "starlette>=0.37",
            "httpx>=0.27",
            *BENCH,
        ],
    },
    entry_points={"console_scripts": ["nubis=nubis.cli.main:main"]},
)
