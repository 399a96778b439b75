"""Batch manifests: library versions and checkpoint file hashes, as the worker sees them."""

import hashlib
import importlib.metadata
import os
from functools import lru_cache
from pathlib import Path

LIBRARIES = ("torch", "transformers", "diffusers", "peft", "sentence-transformers", "safetensors")

# Weight files are hashed whole up to this size. Larger ones are hashed over their first and
# last 16 MiB plus their size, which distinguishes revisions without reading gigabytes per job.
FULL_HASH_LIMIT = 256 * 1024 * 1024
PARTIAL_CHUNK = 16 * 1024 * 1024


def library_versions():
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@lru_cache(maxsize=256)
def _file_digest(path, size, mtime_ns):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
            return digest.hexdigest()
        digest.update(handle.read(PARTIAL_CHUNK))
        handle.seek(size - PARTIAL_CHUNK)
        digest.update(handle.read(PARTIAL_CHUNK))
        digest.update(str(size).encode())
        return "partial:" + digest.hexdigest()


def folder_hashes(folder):
    """Map each file under a checkpoint or adapter folder to its SHA-256.

    Returns ``{"hub": id}`` for a hub repo id that is not a local folder; the revision is
    then whatever from_pretrained resolved.
    """
    if not folder:
        return {}
    root = Path(folder)
    if not root.is_dir():
        return {"hub": str(folder)}
    hashes = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            hashes[str(path.relative_to(root))] = _file_digest(str(path), stat.st_size, stat.st_mtime_ns)
    return hashes


def combined_hash(hashes):
    digest = hashlib.sha256()
    for name in sorted(hashes):
        digest.update(f"{name}={hashes[name]}\n".encode())
    return digest.hexdigest()


def worker_manifest(checkpoint, adapter=None, judge_checkpoint=None):
    manifest = {
        "versions": library_versions(),
        "checkpoint": {"path": str(checkpoint), "sha256": combined_hash(folder_hashes(checkpoint))},
        "host": os.uname().nodename,
    }
    if adapter:
        manifest["adapter"] = {"path": str(adapter), "sha256": combined_hash(folder_hashes(adapter))}
    if judge_checkpoint:
        manifest["judge_checkpoint"] = {
            "path": str(judge_checkpoint), "sha256": combined_hash(folder_hashes(judge_checkpoint)),
        }
    return manifest
