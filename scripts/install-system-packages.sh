#!/usr/bin/env bash
# Install the Debian packages attnkit's applications and tests read at run time, only those
# missing: `apt-get update` once, then one `apt-get install -y`. Quick when all are present.
#   sword-text-kjv sword-text-sparv   Bible verse pairs (translation, real text)
#   chromium chromium-driver          the HTML viewer's browser test
#   espeak-ng                         synthesised speech (speech recognition)
#   git binutils ... gettext          their French gettext catalogues (translation, gettext:fr);
#                                     the list is attnkit.data.sources.gettext_source's
set -euo pipefail
packages=(sword-text-kjv sword-text-sparv chromium chromium-driver espeak-ng
  git binutils libgtk2.0-common libgtk-3-common libc-l10n iso-codes xkb-data libglib2.0-data
  gsettings-desktop-schemas gnupg-l10n shared-mime-info appstream coreutils tar dpkg make gettext)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "attnkit: cannot install ${missing[*]}: no apt-get on this machine; install them by hand" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "attnkit: installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
