# deskbot: chat-to-desk-phone bridge. pjsua2 wheels exist for linux/amd64 only.
# Build: docker build --platform linux/amd64 -t deskbot .
# Run:   docker run --network host -v $PWD/config.toml:/config/config.toml:ro \
#          -v deskbot-data:/data -e SLACK_BOT_TOKEN -e SLACK_APP_TOKEN deskbot
# An office's edge (README "Several offices"): the same image, command `edge`:
#        docker run --network host -v $PWD/edge.toml:/config/config.toml:ro \
#          -e DESKBOT_NATS_CREDS deskbot edge
FROM --platform=linux/amd64 python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md COPYING ./
COPY deskbot ./deskbot
RUN python -m venv /opt/deskbot \
 && /opt/deskbot/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/deskbot/bin/pip install --no-cache-dir .

FROM --platform=linux/amd64 python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="deskbot" \
      org.opencontainers.image.licenses="GPL-2.0-or-later"
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin deskbot \
 && mkdir -p /config /data && chown deskbot /data
COPY --from=build /opt/deskbot /opt/deskbot
COPY config.example.toml /config/config.example.toml
ENV PATH=/opt/deskbot/bin:$PATH \
    DESKBOT_CONFIG=/config/config.toml \
    PYTHONUNBUFFERED=1
USER deskbot
WORKDIR /data
VOLUME ["/data"]
# 5070: SIP (UDP and TCP, [sip] listen); 3000: Slack HTTP mode ([slack] http_listen);
# (`deskbot edge` serves /-/ready on [health] listen too: the same HEALTHCHECK fits it.)
# 9120: /healthz, /-/ready and /metrics ([health] listen; set it to 0.0.0.0:9120 to scrape from outside).
EXPOSE 5070/udp 5070/tcp 3000/tcp 9120/tcp
# healthy = ready to take commands: started, the audit log writes, the SIP agent lives, chats connected
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:9120/-/ready', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["deskbot"]
CMD ["run"]
