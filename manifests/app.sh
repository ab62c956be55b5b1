#!/bin/sh
# The command of the web app as an OSCAR exposed service (app.yaml). The app serves its
# pages under OSCAR_SD_ROOT_PATH (/system/services/oscar-sd/exposed, set by the FDL), else
# under OSCAR_SERVICE_BASE_PATH, which OSCAR sets since v4.0 (oscar_sd/_settings.py).
set -eu
exec oscar-sd serve
