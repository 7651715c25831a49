"""How many attempts through a load-balanced address make "nothing answered" a verdict, not luck.

kube-proxy picks an endpoint per connection. If `k` endpoints are ready and at least one of them
answers, `n` independent attempts all miss it with probability at most ((k-1)/k)^n (the worst
case: only one answers). `attempts_for` picks the smallest n that pushes this below `P_CHANCE`,
so an all-failed run means the Service path is broken, not that kube-proxy was unlucky:
20 attempts for 2 endpoints, 35 for 3, 49 for 4. Refused attempts cost a millisecond each and
dropped ones one timeout per parallel wave (probes/vip.py), so the count is affordable; a time
budget still bounds it, and `chance_all_missed` says how much luck is left when it stopped early.
"""
from __future__ import annotations

import math

P_CHANCE = 1e-6
MIN_ATTEMPTS = 3  # even a single endpoint gets a second and third try (a lost SYN, a restart)
MAX_ATTEMPTS = 256


def attempts_for(endpoints: int, p_chance: float = P_CHANCE) -> int:
    """Attempts after which missing every live endpoint by chance has probability < `p_chance`.

    >>> attempts_for(2), attempts_for(3), attempts_for(1), attempts_for(0)
    (20, 35, 3, 3)
    """
    if endpoints <= 1:
        return MIN_ATTEMPTS
    n = math.ceil(math.log(p_chance) / math.log((endpoints - 1) / endpoints))
    return max(MIN_ATTEMPTS, min(MAX_ATTEMPTS, n))


def chance_all_missed(endpoints: int, alive: int, attempts: int) -> float:
    """Probability that `attempts` uniform picks among `endpoints` all land on the dead ones.

    >>> round(chance_all_missed(2, 1, 3), 3), chance_all_missed(2, 0, 3), chance_all_missed(2, 2, 3)
    (0.125, 1.0, 0.0)
    """
    if endpoints <= 0 or alive <= 0:
        return 1.0
    if alive >= endpoints:
        return 0.0
    return ((endpoints - alive) / endpoints) ** attempts


# Share of attempts that may fail for reasons no backend is to blame for (a lost SYN on a busy
# node, a retransmit that misses the timeout), when judging whether a ClusterIP answers as
# often as its live backends say it should.
BENIGN_LOSS = 0.05


def chance_so_few_answered(answered: int, attempted: int, endpoints: int, alive: int,
                           loss: float = BENIGN_LOSS) -> float:
    """P(at most `answered` of `attempted` attempts answer) if kube-proxy picked uniformly among
    `endpoints`, `alive` of which answer, with `loss` of the attempts lost anyway (binomial tail).

    >>> chance_so_few_answered(1, 17, 2, 2) < 1e-6     # both backends answer, 1 of 17 got through
    True
    >>> chance_so_few_answered(5, 17, 2, 1) > 0.1       # one of two dead: about half get through
    True
    """
    if endpoints <= 0 or alive <= 0 or attempted <= 0:
        return 1.0
    q = min(1.0, alive / endpoints) * (1.0 - loss)
    return sum(math.comb(attempted, i) * q ** i * (1.0 - q) ** (attempted - i) for i in range(answered + 1))
