#!/bin/bash -eu
# OSS-Fuzz builds exactly what ClusterFuzzLite builds.
exec bash "$SRC/privmem/.clusterfuzzlite/build.sh"
