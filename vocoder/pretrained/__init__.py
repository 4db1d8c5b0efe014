"""The registry of pretrained models: shipped with the package, or hosted and cached.

`pretrained/registry.json` (beside the `vocoder` package in a source checkout; installed as
`vocoder/shipped/` by a wheel) lists each model: its name, a description, its files
(`<stem>.safetensors` weights and the `<stem>.json` config beside them, each with its sha256
and size), an optional `url` where the files are hosted, whether it is the default model,
its model card and a few summary figures. `$VOCODER_REGISTRY` names another registry file.

Where a registry name resolves (`resolve_model_path`), in this order:

1. shipped: the file beside the registry (`PRETRAINED_DIR`: `vocoder/shipped/` when
   installed from a wheel, else `pretrained/` of the source tree, as an editable install
   has it).
2. cached: `<cache>/<name>/<file>`, where `<cache>` is the `cache_dir` argument, else
   `$VOCODER_CACHE`, else `~/.cache/vocoder`.
3. remote: downloaded from the entry's `url` into the cache, then as 2.

Every file is checked against its size and sha256 each time it is resolved or listed
(`model_location`). A damaged cached file is downloaded again; a damaged shipped one (or a
cached one with no url) is an `InputError` naming the file and how to restore it. Downloads
go to a temporary file inside the cache folder, are checked, then moved into place with
`os.replace`; on any failure nothing is left behind, not even the folders made for them.

The same file may list `published` weights: files the original authors publish elsewhere
(Google Drive, NVIDIA NGC), with what is known about them and the `vocoder import` line that
turns each into a model (`PublishedWeights`, `load_published`). Those on a plain HTTPS host can
be fetched with `download_published`; the others are downloaded by hand.

`registry` reads the models list and resolves names; `published` the published list;
`download` fetches files. This package depends on the standard library only, so that any
layer may resolve a name.
"""

from vocoder.files import sha256_file
from vocoder.pretrained.download import DOWNLOAD_TIMEOUT_S, cache_root
from vocoder.pretrained.published import (
    MANUAL_HOSTS,
    PublishedWeights,
    download_published,
    get_published,
    load_published,
)
from vocoder.pretrained.registry import (
    PRETRAINED_DIR,
    REGISTRY_FILE,
    REGISTRY_FORMAT,
    WEIGHTS_SUFFIX,
    ModelEntry,
    ModelFile,
    default_model_name,
    download_model,
    get_model,
    list_models,
    load_registry,
    model_location,
    names_a_path,
    registry_path,
    resolve_model_path,
    verify_file,
)

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "MANUAL_HOSTS",
    "ModelEntry",
    "ModelFile",
    "PRETRAINED_DIR",
    "PublishedWeights",
    "REGISTRY_FILE",
    "REGISTRY_FORMAT",
    "WEIGHTS_SUFFIX",
    "cache_root",
    "default_model_name",
    "download_model",
    "download_published",
    "get_model",
    "get_published",
    "list_models",
    "load_published",
    "load_registry",
    "model_location",
    "names_a_path",
    "registry_path",
    "resolve_model_path",
    "sha256_file",
    "verify_file",
]
