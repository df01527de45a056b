# mmintent on Debian 12 (bookworm): installs the user package set (scripts/setup.sh, no
# developer tools), builds the CLI as an unprivileged user and runs the demo, so a finished
# image holds a trained demo run in /home/mmintent/mmintent/runs/demo.
#   docker build -t mmintent .
#   docker run --rm mmintent predict runs/demo --text "are these trousers available in navy?"
#   docker run --rm -p 8080:8080 -v "$PWD/keys:/keys:ro" mmintent serve runs/demo --host 0.0.0.0 serve.api_keys_file=/keys/api.txt
FROM debian:bookworm

# The package list lives in one place, scripts/setup.sh; it runs here as root.
COPY scripts/setup.sh /tmp/setup.sh
RUN bash /tmp/setup.sh && rm -rf /var/lib/apt/lists/* /tmp/setup.sh

RUN useradd --create-home --shell /bin/bash mmintent
USER mmintent
WORKDIR /home/mmintent/mmintent
COPY --chown=mmintent:mmintent . .
# setup.sh finds every package installed (no root needed); the demo builds only the CLI and the
# data generator, generates the demo data from Debian's Fashion-MNIST and trains it.
RUN bash scripts/demo.sh

ENTRYPOINT ["/home/mmintent/mmintent/build/bin/mmintent"]
CMD ["--help"]
