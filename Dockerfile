# The runner image of the app's services: one of Dataloop's Python 3.11 runner images with this project's runtime
# requirements (requirements.txt) baked in, so a service starts with torch, transformers and the rest already there.
# The code itself is not in the image: Dataloop mounts the app's codebase. See docs/app.md.
#
# `python creation.py --project-id <PROJECT_ID> --registry <REPOSITORY>` builds both images from this file, pushes
# them and publishes the app naming them (creation.IMAGE_BUILD_ARGS holds each image's build arguments, and
# creation.IMAGE_CONTEXT the files a build receives: everything this file copies):
#   GPU image (compute configs hugging-gpu, hugging-gpu-train, hugging-gpu-train-large): the defaults below,
#     tagged <REPOSITORY>:gpu-<version>.
#   CPU image (compute config hugging-cpu): --build-arg RUNNER=cpu:python3.11_pytorch2 and torch from PyTorch's CPU
#     index (--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu) keep CUDA libraries (GBs) out of it;
#     tagged <REPOSITORY>:cpu-<version>.
# The version is the app's in dataloop.json; the registry must let Dataloop pull (public, or a registry integration).

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
