#!/bin/sh
# The command of the web app as an OSCAR exposed service (app.yaml). OSCAR sets
# OSCAR_SERVICE_BASE_PATH (/system/services/oscar-sd/exposed); the app serves its pages
# under it (oscar_sd/_settings.py falls back to it for OSCAR_SD_ROOT_PATH).
set -eu
exec oscar-sd serve
