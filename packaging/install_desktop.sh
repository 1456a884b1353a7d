#!/usr/bin/env bash
# Install the NeuroLens menu entry and icon for the current user, pointing at a one-folder bundle.
# Usage: packaging/install_desktop.sh [BUNDLE_DIR]     (default: the folder this script is in when it holds
#        neurolens-app, i.e. the copy build.sh puts into the bundle; else dist/neurolens of this checkout)
#        packaging/install_desktop.sh --uninstall
# Writes ~/.local/share/applications/neurolens.desktop and ~/.local/share/icons/hicolor/scalable/apps/neurolens.svg
# (XDG_DATA_HOME is honoured). Nothing outside the user's data folder is touched.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
apps="$data/applications"
icons="$data/icons/hicolor/scalable/apps"

if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$apps/neurolens.desktop" "$icons/neurolens.svg"
    echo "removed $apps/neurolens.desktop and $icons/neurolens.svg"
    exit 0
fi

if [ -n "${1:-}" ]; then
    bundle=$(cd "$1" && pwd)
elif [ -x "$here/neurolens-app" ]; then
    bundle=$here
else
    bundle=$(cd "$here/.." && pwd)/dist/neurolens
fi
app="$bundle/neurolens-app"
[ -x "$app" ] || { echo "install_desktop.sh: $app: not found (build first: packaging/build.sh)" >&2; exit 2; }

# The entry and the icon travel inside the bundle (build.sh copies them); a checkout has them under resources/.
entry=$bundle/neurolens.desktop
[ -f "$entry" ] || entry=$here/../resources/desktop/neurolens.desktop
icon=$bundle/_internal/resources/icons/neurolens.svg
[ -f "$icon" ] || icon=$here/../resources/icons/neurolens.svg

mkdir -p "$apps" "$icons"
# Exec/TryExec get the bundle's absolute path (quoted as the desktop entry spec asks, for paths with spaces).
sed -e "s|^Exec=neurolens-app|Exec=\"$app\"|" -e "s|^TryExec=neurolens-app|TryExec=$app|" "$entry" \
    > "$apps/neurolens.desktop.tmp"
mv "$apps/neurolens.desktop.tmp" "$apps/neurolens.desktop"
install -m 644 "$icon" "$icons/neurolens.svg"
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate "$apps/neurolens.desktop"
fi
command -v update-desktop-database >/dev/null && update-desktop-database -q "$apps" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$data/icons/hicolor" || true
echo "installed $apps/neurolens.desktop (Exec=$app) and $icons/neurolens.svg"
