"""The webhook template sandbox keeps a template from building values past its output limit,
whatever operator, string method or filter it uses, and turns running out of memory into a
template failure (the channel then sends its default body)."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.notify.templates import MAX_OUTPUT, TemplateFailed, environment, render

HUGE = 2**40  # asked for outright, far more than any machine gives
BIG = 50_000_000  # allocated at once without the limits: 50 MB

CONTEXT: dict[str, Any] = {"reason": "quota exceeded", "policy": "web-cpu-high", "count": 1}


@pytest.mark.parametrize(
    "source",
    [
        f'{{{{ "a".ljust({HUGE}) }}}}',
        f"{{{{ reason.rjust({HUGE}) | length }}}}",
        f"{{% set x = reason.center({BIG}) %}}{{{{ x | length }}}}",
        f'{{% set x = "7".zfill({BIG}) %}}{{{{ x | length }}}}',
        f"{{% set x = reason | center({BIG}) %}}{{{{ x | length }}}}",
        f"{{{{ reason | center({HUGE}) | length }}}}",
        f"{{% set x = reason | indent({BIG}, true) %}}{{{{ x | length }}}}",
        f'{{% set x = "%{BIG}s" | format(reason) %}}{{{{ x | length }}}}',
        f'{{% set x = "%{BIG}s" % reason %}}{{{{ x | length }}}}',
        f'{{% set x = "%*s" % ({BIG}, reason) %}}{{{{ x | length }}}}',
        f'{{% set x = "%.{BIG}f" % 1.5 %}}{{{{ x | length }}}}',
        f'{{% set x = "{{:>{BIG}}}".format(reason) %}}{{{{ x | length }}}}',
        f'{{% set x = "{{:>{{w}}}}".format(reason, w={BIG}) %}}{{{{ x | length }}}}',
        f'{{% set x = "a\\tb".expandtabs({BIG}) %}}{{{{ x | length }}}}',
        '{% set x = "a" * 900000 %}{% set y = x.replace("a", "bbbbbbbbbb") %}{{ y | length }}',
        '{% set x = "a" * 900000 %}{% set y = x + x %}{{ y | length }}',
        f'{{% set x = "a" * {BIG} %}}{{{{ x | length }}}}',
    ],
)
def test_a_runaway_value_fails_the_template(source: str) -> None:
    with pytest.raises(TemplateFailed):
        render(environment(), source, CONTEXT)


def test_values_within_the_limit_render_as_usual() -> None:
    source = (
        '{{ "a".ljust(3) }}|{{ reason | center(20) }}|{{ "%5s" % "x" }}|{{ "%-4s|" | format("y") }}'
        '{{ "{:>4}".format("z") }}|{{ "7".zfill(3) }}|{{ "l1\nl2" | indent(2) }}|{{ "ab" + "c" }}'
    )
    assert render(environment(), source, CONTEXT) == (
        "a  |   quota exceeded   |    x|y   |   z|007|l1\n  l2|abc"
    )
    assert len(render(environment(), f'{{{{ "a".ljust({MAX_OUTPUT}) }}}}', CONTEXT)) == MAX_OUTPUT


class _Exhausting:
    def __str__(self) -> str:
        raise MemoryError


def test_running_out_of_memory_is_a_template_failure() -> None:
    with pytest.raises(
        TemplateFailed, match=r"^MemoryError: the template built a value too large$"
    ):
        render(environment(), "{{ value }}", {"value": _Exhausting()})
