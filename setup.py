"""Install the ``fastreid`` package: ``pip install -e .[dev]`` (tests) or ``.[gpu]`` (faiss on GPU)."""
from setuptools import find_packages, setup

ONNX_REQUIRES = ["onnx>=1.14", "onnxruntime>=1.16"]
SERVE_REQUIRES = ["fastapi>=0.164", "uvicorn>=0.20", "python-multipart>=0.0.9"]
# tools/make_object_patents.py: reading OBJ models (trimesh 4 reads OBJ from a byte stream as used).
OBJECTS_REQUIRES = ["trimesh>=4.0"]

setup(
    name="fastreid",
    version="0.1.0",
    description="Patent drawing retrieval (DeepPatent / DIRA) trained like person re-identification",
    license="Apache-2.0",
    packages=find_packages(include=["fastreid", "fastreid.*"]),
    package_data={"fastreid.retrieval": ["static/*"]},
    python_requires=">=3.9",
    install_requires=[
        # torch.amp.GradScaler("cuda") (the AMP trainer) exists from torch 2.3; torchvision 0.18 pairs with it.
        "torch>=2.3",
        "torchvision>=0.18",
        "yacs>=0.1.8",
        "PyYAML>=5.4",
        "faiss-cpu>=1.7.4",
        "tensorboard>=2.10",
        "termcolor>=1.1",
        "tabulate>=0.8.9",
        "tqdm>=4.60",
        "scipy>=1.8",
        "Pillow>=10.1",
        "numpy>=1.22",
    ],
    extras_require={
        # The official faiss GPU wheels; uninstall faiss-cpu first so both do not provide `faiss`.
        "gpu": ["faiss-gpu-cu12>=1.8"],
        # The search page (tools/serve.py); fastapi 0.164 brought the request body limit it uses.
        "serve": SERVE_REQUIRES,
        # ONNX export (tools/export.py) and extraction with onnxruntime (build_index / search --onnx).
        "onnx": ONNX_REQUIRES,
        # The real-object development set (tools/make_object_patents.py).
        "objects": OBJECTS_REQUIRES,
        # Tests; scikit-learn is only their oracle for the metrics.
        "dev": ["pytest>=7.0", "pytest-timeout>=2.1", "scikit-learn>=1.0", *SERVE_REQUIRES, *ONNX_REQUIRES,
                *OBJECTS_REQUIRES, "httpx>=0.24", "selenium>=4.11"],
    },
)
