#!/bin/sh
# Entry point of the alertmanager service: Alertmanager's configuration cannot read environment
# variables, so the webhook URL of velocast's notifications (VELOCAST_WEBHOOK_URL) is written to
# the file alertmanager.yml names in slack_configs.api_url_file ($WEBHOOK_URL_FILE), readable by
# this user only, then Alertmanager starts with the arguments given. A Discord webhook gets
# "/slack" (Discord's Slack-compatible endpoint); a Slack webhook is used as it is.
set -eu
url="${VELOCAST_WEBHOOK_URL:-}"
file="${WEBHOOK_URL_FILE:-/alertmanager/webhook_url}"
case "$url" in
  https://discord.com/api/webhooks/*|https://discordapp.com/api/webhooks/*|https://*.discord.com/api/webhooks/*)
    base="${url%%\?*}"
    query="${url#"$base"}"
    case "$base" in
      */slack) ;;
      *) url="${base%/}/slack${query}" ;;
    esac
    ;;
esac
if [ -z "$url" ]; then
  echo "start.sh: VELOCAST_WEBHOOK_URL is empty: alerts are shown in Alertmanager's UI, no message is sent" >&2
fi
umask 077
printf '%s' "$url" > "$file"
exec "${ALERTMANAGER_BIN:-/bin/alertmanager}" "$@"
