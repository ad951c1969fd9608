# The overlayd image: the package in a virtual environment, iproute2, ping,
# the CNI plugins and gobgpd (the demo's route reflector), plus the demo's two
# scripts (docker/). Used by docker-compose.yml; works on its own too:
#
#   docker build -t overlayd .
#   docker run --cap-add NET_ADMIN --device /dev/net/tun -v $PWD/configs:/configs \
#       overlayd overlayd -c /configs/node1.yaml
#
# BASE_IMAGE: any Debian bookworm image with python3 (and python3-venv).
# The default is the official Python image; tests/compose builds one with
# debootstrap instead, for machines that reach no registry.
#
# Wheels: pip takes what it finds in docker/wheelhouse/ first. Empty (as in
# git), pip downloads from the package index; filled on the host
# (`make wheels`) and built with --build-arg PIP_NO_INDEX=1, the build needs
# no network at all.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG PIP_NO_INDEX=
ENV PIP_NO_INDEX=${PIP_NO_INDEX} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/overlayd/bin:${PATH}

# Only what the base lacks is installed, so a base that has it all (the
# debootstrap one) needs no package index.
RUN set -e; \
    missing=""; \
    for p in iproute2 iputils-ping containernetworking-plugins procps gobgpd; do \
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; \
        rm -rf /var/lib/apt/lists/*; \
    fi

COPY docker/wheelhouse/ /tmp/wheelhouse/
COPY pyproject.toml README.md /src/
COPY overlayd/ /src/overlayd/
RUN python3 -m venv /opt/overlayd \
    && /opt/overlayd/bin/pip install --no-cache-dir --find-links /tmp/wheelhouse /src \
    && rm -rf /tmp/wheelhouse /src

COPY docker/demo-node docker/demo-checker /usr/local/bin/
CMD ["overlayd", "--help"]
