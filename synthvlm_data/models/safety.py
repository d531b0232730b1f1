"""Image safety detectors.

`nudenet` (PyPI `nudenet` 3.4.2, AGPL-3.0): a YOLOv8n detector exported to ONNX whose weights
(`320n.onnx`, 12 MB) ship inside the wheel, so it runs offline on the CPU through onnxruntime; it
boxes 18 body-part classes (exposed / covered) with a score each. Installed by the `safety` extra.
"""

from __future__ import annotations

from pathlib import Path

from synthvlm_data.errors import import_optional

# nudenet 3.4.2's classes (nudenet/nudenet.py `__labels`), in its output order.
NUDENET_CLASSES = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)


def load_nudenet(threads: int = 1):
    """nudenet's `NudeDetector` on the wheel's ONNX model, its session pinned to `threads` CPU
    threads (onnxruntime's default is every core: results and the build's CPU share would vary)."""
    nudenet = import_optional("nudenet", "safety", "score.safety (detector: nudenet)")
    ort = import_optional("onnxruntime", "safety", "score.safety (detector: nudenet)")
    detector = nudenet.NudeDetector()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = max(1, threads)
    model = Path(nudenet.__file__).with_name("320n.onnx")
    detector.onnx_session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    return detector
