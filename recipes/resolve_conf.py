"""Write a recipe's experiment config with its overrides applied, fully resolved.

    python recipes/resolve_conf.py CONF.yaml OUT.yaml [key.path=value ...]

`vocoder prepare --config OUT.yaml` then takes the run's mel convention and segment length
from it, so the prepared data and the run agree. Prints the convention in one line.
"""

import sys

import yaml

from vocoder.train.config import experiment_to_dict, load_experiment_config

conf, out, *overrides = sys.argv[1:]
config = load_experiment_config(conf, overrides)
with open(out, "w") as f:
    yaml.safe_dump(experiment_to_dict(config), f)
mel = config.features
print(f"{mel.sample_rate} Hz, hop {mel.hop_length}, {mel.n_mels} mels")
