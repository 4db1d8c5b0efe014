"""Datasets: LJ Speech and folders of audio, filelists, preparation, training segments.

- `filelist`: read/write filelists (one audio path per line)
- `splits`: id lists, seeded splits, validation slices
- `ljspeech`: the LJ Speech layout and its published splits
- `folder`: a folder of audio files (custom voices)
- `prepare`: validate a dataset for a run's mel convention; write filelists and a manifest
- `segments`: `SegmentDataset` (training segments) and `UtteranceDataset` (whole utterances)
"""
