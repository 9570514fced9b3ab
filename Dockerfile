# The runner image of the app's services: one of Dataloop's Python 3.11 runner images with this project's runtime
# requirements (requirements.txt) baked in, so a service starts with torch, transformers and the rest already there.
# The code itself is not in the image: Dataloop mounts the app's codebase. See docs/app.md.
#
# GPU image (compute configs hugging-gpu, hugging-gpu-train, hugging-gpu-train-large):
#   docker build -t ghcr.io/huggingface-nlp-adapters/runner:gpu-0.1.0 .
# CPU image (compute config hugging-cpu); torch from PyTorch's CPU index keeps CUDA libraries (GBs) out of it:
#   docker build -t ghcr.io/huggingface-nlp-adapters/runner:cpu-0.1.0 \
#       --build-arg RUNNER=cpu:python3.11_pytorch2 --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
# Then push both (the registry must be public, so that Dataloop can pull them):
#   docker push ghcr.io/huggingface-nlp-adapters/runner:gpu-0.1.0
#   docker push ghcr.io/huggingface-nlp-adapters/runner:cpu-0.1.0
# The tag is the app's version in dataloop.json; tests/test_creation.py checks the manifest names these images.

ARG RUNNER=gpu:python3.11_cuda11.8_pytorch2
FROM hub.dataloop.ai/dtlpy-runner-images/${RUNNER}

# Where torch 2.13.0 comes from: PyPI's build bundles its CUDA runtime (GPU); PyTorch's CPU index has the CPU build.
ARG TORCH_INDEX=https://pypi.org/simple

USER 1000
ENV HOME=/tmp
WORKDIR /tmp
COPY requirements.txt /tmp/hf-adapters-requirements.txt
RUN python3.11 -m pip install --user --no-cache-dir --index-url ${TORCH_INDEX} torch==2.13.0 \
    && python3.11 -m pip install --user --no-cache-dir -r /tmp/hf-adapters-requirements.txt \
    && python3.11 -c "import torch, transformers, dtlpy; print('torch', torch.__version__, 'transformers', transformers.__version__)"
