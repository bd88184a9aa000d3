# Two commands on a fresh Debian machine: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_STAMP := /var/lib/edged-apt.stamp
APT_PACKAGES := ffmpeg libsrt1.5-gnutls srt-tools chromium \
	gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav nats-server nginx-light
HLSJS_VERSION := 1.7.4
TMIJS_VERSION := 1.8.5

.PHONY: run test check proto deps apt clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@# the generated gRPC package (edgenet/, made by `make proto`) lives at the repo root: put the root on the path
	$(BIN)/python -c "import site, sys; open(site.getsitepackages()[0] + '/edged-repo-root.pth', 'w').write(sys.argv[1] + '\n')" "$(CURDIR)"
	touch $(STAMP)

apt:
	@if ! command -v ffmpeg >/dev/null || ! command -v srt-live-transmit >/dev/null || ! command -v chromium >/dev/null \
		|| ! command -v gst-launch-1.0 >/dev/null || ! command -v nats-server >/dev/null || ! command -v nginx >/dev/null || ! gst-inspect-1.0 rtmp2sink x264enc avenc_aac >/dev/null 2>&1 \
		|| ! ldconfig -p | grep -q libsrt-gnutls; then \
		echo "installing Debian packages: $(APT_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

deps: $(STAMP) apt proto

# hls.js for the browser playback test (headless Chromium), from the npm registry.
build/web/hls.min.js:
	@command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null)
	mkdir -p build/web
	cd build/web && npm pack --silent hls.js@$(HLSJS_VERSION) >/dev/null && tar xzf hls.js-$(HLSJS_VERSION).tgz package/dist/hls.min.js \
		&& mv package/dist/hls.min.js . && rm -rf package hls.js-$(HLSJS_VERSION).tgz

# tmi.js (a Twitch chat client library) and its dependencies, for the chat test that runs it with Debian's node.
build/chat/node_modules/tmi.js/package.json:
	@command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null)
	mkdir -p build/chat
	cd build/chat && npm install --silent --no-audit --no-fund --no-save --prefix . tmi.js@$(TMIJS_VERSION) >/dev/null

# Generated gRPC code is a build output (never committed): proto path = package path.
proto: $(STAMP)
	@protos=$$(find proto -name '*.proto' 2>/dev/null); if [ -n "$$protos" ]; then \
		$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --grpc_python_out=. --pyi_out=. $$protos && \
		for d in $$(find proto -mindepth 1 -type d | sed 's|^proto/||'); do touch $$d/__init__.py; done; \
	fi

run: deps
	@echo "publish: ffmpeg -re -i INPUT -c copy -f flv rtmp://127.0.0.1:1935/live/demo-key"
	@echo "watch:   ffplay http://127.0.0.1:8080/live/demo/master.m3u8"
	$(BIN)/edged run --data-dir var/edged --channel demo:demo-key

# lint and types: ruff, then mypy (strict for edged/ and originctl/, configured in pyproject.toml)
check: $(STAMP) proto
	$(BIN)/ruff check edged originctl tests bench
	$(BIN)/mypy

test: deps build/web/hls.min.js build/chat/node_modules/tmi.js/package.json
	$(BIN)/ruff check edged originctl tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) edgenet build var
