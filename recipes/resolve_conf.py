"""Write a recipe's experiment config with its overrides applied, fully resolved.

    python recipes/resolve_conf.py CONF.yaml OUT.yaml [key.path=value ...]

`vocoder prepare --config OUT.yaml` then takes the run's mel convention and segment length
from it, so the prepared data and the run agree. Prints the convention in one line; a bad
config or override is one line on stderr, worded as `vocoder train` words it, and exit 2.
"""

import sys

import yaml

from vocoder.cli import describe_error
from vocoder.errors import VocoderError
from vocoder.train.config import experiment_to_dict, load_experiment_config

conf, out, *overrides = sys.argv[1:]
try:
    config = load_experiment_config(conf, overrides)
except (VocoderError, OSError) as error:
    sys.exit(f"error: {describe_error(error, overrides)}")
with open(out, "w") as f:
    yaml.safe_dump(experiment_to_dict(config), f)
mel = config.features
print(f"{mel.sample_rate} Hz, hop {mel.hop_length}, {mel.n_mels} mels")
