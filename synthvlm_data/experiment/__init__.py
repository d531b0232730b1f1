"""The experiment in miniature: the same tiny LLaVA trained on real renders, synthetic images
(random pick / SynthVLM selection / a fifth of it) and Synth^2 latents, scored on the world suite.
`make experiment` = `python -m synthvlm_data.experiment`."""
