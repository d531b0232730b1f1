"""The miniature world: a procedural world with exact ground truth, and the small models trained on it.

Ground truth (numpy and PIL only; no torch at import, no model):
    scene.py (scenes, attributes), render.py (pixels), text.py (captions, corruptions, the parser),
    verify.py (pixels -> attributes), data.py (seeded splits), pool.py (caption pools),
    questions.py (the prompts and questions asked about a scene)
The world's models (torch), trained on the ground truth:
    train_clip.py, train_diffusion.py, tokenizer.py, lm.py, clip_vit.py, build_models.py
    (`python -m synthvlm_data.world build-models`), weights/ (committed)
Measurements over both: zeroshot.py, calibrate.py, analysis.py, measure.py
"""
