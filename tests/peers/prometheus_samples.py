"""Parses a Prometheus text exposition from stdin with prometheus_client
(the reference Python client's parser, independent of Posta's exporter)
and prints its samples as one JSON array: [{"name", "labels", "value"}].
A malformed exposition makes the parser raise, and this exit non-zero."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value})
json.dump(samples, sys.stdout)
