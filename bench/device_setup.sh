# Source this on a lent GPU machine (no registry, no espeak-ng) before running recipes or benchmarks:
#   source bench/device_setup.sh
# It unpacks the Debian packages carried in .debs/ (espeak-ng and its libraries, dict-devil,
# dict-gcide, r-cran-janeaustenr) under /opt/debs, puts an espeak-ng wrapper on PATH and the dictd files where
# recipes/synthetic/text.py reads them, and installs the wheels carried in .whl/ into /tmp/site.
# Make the carried folders here with:
#   mkdir -p .debs && (cd .debs && apt-get download espeak-ng libespeak-ng1 espeak-ng-data libpcaudio0 \
#       libsonic0 libasound2 libpulse0 dict-devil dict-gcide r-cran-janeaustenr)
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl lhotse lilcom kaldialign ...
set -e
libs=/opt/debs/usr/lib/x86_64-linux-gnu:/opt/debs/usr/lib/x86_64-linux-gnu/pulseaudio:/opt/debs/lib/x86_64-linux-gnu
if [ ! -x /usr/bin/espeak-ng ] && [ -d .debs ]; then
  mkdir -p /opt/debs
  for f in .debs/*.deb; do dpkg -x "$f" /opt/debs; done
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ESPEAK_DATA_PATH=%s/espeak-ng-data exec %s "$@"\n' \
    "$libs" /opt/debs/usr/lib/x86_64-linux-gnu /opt/debs/usr/bin/espeak-ng >/usr/local/bin/espeak-ng
  chmod +x /usr/local/bin/espeak-ng
  mkdir -p /usr/share/dictd
  cp -n /opt/debs/usr/share/dictd/*.dict.dz /usr/share/dictd/ 2>/dev/null || true
  if [ -d /opt/debs/usr/lib/R/site-library/janeaustenr ]; then  # read by recipes/synthetic/rdata.py, no R needed
    mkdir -p /usr/lib/R/site-library && cp -rn /opt/debs/usr/lib/R/site-library/janeaustenr /usr/lib/R/site-library/
  fi
fi
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -d .debs ] && ! espeak-ng --voices=variant >/dev/null; then
  LD_LIBRARY_PATH=$libs ldd /opt/debs/usr/bin/espeak-ng | grep "not found"
  return 1 2>/dev/null || exit 1
fi
command -v espeak-ng >/dev/null && espeak-ng --version
python3 -c "import torch, lhotse; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'lhotse', lhotse.__version__)"
set +e
