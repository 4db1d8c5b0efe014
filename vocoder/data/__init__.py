"""Datasets: LJSpeech and folders of audio, filelists, preparation, training segments."""
