"""Fill a rendered cloud overlay's placeholders from terraform's outputs, so no value is ever typed by hand:

    terraform -chdir=infra/terraform output -json > /tmp/tf.json
    kubectl kustomize infra/k8s/overlays/aws | python infra/k8s/fill.py /tmp/tf.json > /tmp/cta-aws.yaml

`REPLACE_WITH_terraform_output_<name>` becomes output <name>, or for a map output <map>_<key> its <key> entry
(`irsa_role_arns_flows` -> irsa_role_arns["flows"]). Any placeholder left unfilled (an output that does not exist,
or a REPLACE_WITH_ that is no terraform output, like Azure's s3_gateway_url) is an error: exit 1, nothing written.
The placeholders are filled after rendering, so the ConfigMaps' hash suffixes do not follow the values: after a
value changes, `kubectl -n cta rollout restart deployment` picks it up."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PLACEHOLDER = re.compile(r"REPLACE_WITH_terraform_output_([A-Za-z0-9_]+)")
ANY_PLACEHOLDER = re.compile(r"REPLACE_WITH_[A-Za-z0-9_]+")


def output_value(outputs: Mapping[str, Any], name: str) -> str | None:
    """An output by name, or a map output's entry by <map>_<key>; None when there is no such output."""
    if name in outputs and not isinstance(outputs[name], dict | list):
        return str(outputs[name])
    for key, value in outputs.items():
        if isinstance(value, dict) and name.startswith(f"{key}_") and name[len(key) + 1 :] in value:
            return str(value[name[len(key) + 1 :]])
    return None


def fill(text: str, outputs: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The text with every terraform placeholder filled, and the placeholders left (missing outputs, or not
    terraform's)."""

    def substitute(match: re.Match[str]) -> str:
        value = output_value(outputs, match.group(1))
        return match.group(0) if value is None else value

    filled = PLACEHOLDER.sub(substitute, text)
    return filled, sorted(set(ANY_PLACEHOLDER.findall(filled)))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(
            "usage: kubectl kustomize OVERLAY | python fill.py TERRAFORM_OUTPUT.json > manifests.yaml", file=sys.stderr
        )
        return 2
    raw = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    outputs = {k: v["value"] for k, v in raw.items()}  # `terraform output -json`: {name: {"value": ...}}
    filled, left = fill(sys.stdin.read(), outputs)
    if left:
        print("unfilled placeholders: " + ", ".join(left), file=sys.stderr)
        return 1
    sys.stdout.write(filled)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
