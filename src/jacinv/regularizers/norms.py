"""Per-sample spectral and squared Frobenius norms of J(y) and J(y) A, matrix-free."""
from __future__ import annotations

import math

import torch

from .._checks import choice, positive_int
from ..operators import Identity, LinearOperator
from .products import JacobianProducts, refuse_batch_coupling

PROJECTIONS = ("gaussian", "sphere", "rademacher")


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """l2 norm over all but the batch dimension, (B, ...) -> (B,)."""
    return t.flatten(1).norm(dim=1)


def normalise(t: torch.Tensor) -> torch.Tensor:
    """Scale each sample of (B, ...) to unit l2 norm."""
    return t / per_sample_norm(t).clamp_min(torch.finfo(t.dtype).tiny).view(-1, *([1] * (t.dim() - 1)))


def apply(operator: LinearOperator | None, v: torch.Tensor) -> torch.Tensor:
    return operator(v) if operator is not None else v


def apply_adjoint(operator: LinearOperator | None, w: torch.Tensor) -> torch.Tensor:
    return operator.adjoint(w) if operator is not None else w


def at_rows(operators: list, y: torch.Tensor, rows: list) -> list:
    """Each block's operator as the operators of its rows: ``operators[k].at(block k of y)`` (y (sum rows, ...) split
    into blocks of ``rows``; None stays None), so that a penalty on J A uses each sample's own A_i."""
    blocks = y.detach().split(rows)
    return [op.at(block) if op is not None else None for op, block in zip(operators, blocks)]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner products of (B, ...) tensors, shaped (B, 1, ..., 1) to broadcast."""
    return (a * b).flatten(1).sum(1).view(-1, *([1] * (a.dim() - 1)))


def _orthonormal_to(basis: list, w: torch.Tensor) -> torch.Tensor:
    """w with its components along the orthonormal ``basis`` removed, normalised (Gram-Schmidt twice)."""
    for _ in range(2):
        for q in basis:
            w = w - _dot(q, w) * q
        w = normalise(w)
    return w


def _refined(basis: list, images: list):
    """Max of ||B x|| over unit x in span(basis) (orthonormal, images = B applied to each):
    (B q* / ||B q*|| as the next vector, sigma = ||B q*||^(1/2)); one vector is a plain power step."""
    if len(basis) == 1:
        return normalise(images[0]), per_sample_norm(images[0]).sqrt()
    w = torch.stack([t.flatten(1) for t in images], 1)
    gram = torch.bmm(w, w.transpose(1, 2)).double()                          # ||W s||^2 = s^T gram s
    best = top_eigenvector(gram)                                             # (rows, k)
    value = (torch.bmm(gram, best.unsqueeze(2)).squeeze(2) * best).sum(1)    # its Rayleigh quotient <= the top one
    image = torch.bmm(best.unsqueeze(1).to(w.dtype), w).view_as(images[0])
    return normalise(image), value.clamp_min(0).to(w.dtype) ** 0.25


def top_eigenvector(gram: torch.Tensor, squarings: int = 16) -> torch.Tensor:
    """Unit top eigenvectors (rows, k) of symmetric positive semi-definite matrices ``gram`` (rows, k, k), by
    repeated squaring where they are (``linalg.eigh`` would make the host wait for the device to check its
    convergence): gram^(2^s) is the projector on the top eigenvector up to
    a factor (lambda_2 / lambda_1)^(2^s) (scaled every few squarings), and its largest column is that vector.  A Rayleigh quotient at the result
    is within about 1 / (2^(s+1) e) of lambda_1 relative to it, whatever the gap (2.8e-6 at s = 16)."""
    tiny = torch.finfo(gram.dtype).tiny
    power = gram
    for step in range(squarings):
        if step % 4 == 0:   # entries in [0, 1] with the largest 1: four squarings keep lambda_1 above k^-16
            power = power / power.amax(dim=(1, 2), keepdim=True).clamp_min(tiny)
        power = torch.bmm(power, power)
    column = power.diagonal(dim1=1, dim2=2).argmax(-1)                       # (rows,)
    vector = power.gather(2, column.view(-1, 1, 1).expand(-1, power.shape[1], 1)).squeeze(2)
    return vector / vector.norm(dim=1, keepdim=True).clamp_min(tiny)


def power_iteration(products: JacobianProducts, operators: list, vectors: list, iters: int, krylov: int = 1):
    """``iters`` detached power steps on M^T M for stacked blocks of rows.

    ``products`` holds len(operators) stacked blocks of rows; block k is iterated with
    M = J A_k (J when A_k is None) from vectors[k] (rows_k, *A_k.in_shape).  Returns
    (new unit vectors per block, per-row lower bounds sigma <= ||M||_2 per block).

    ``krylov`` = 1: plain power iteration, sigma = sqrt(||M^T M v||) at the last unit v.
    ``krylov`` = m > 1: the same products build an orthonormal Krylov basis of up to m vectors
    (restarted when full), and sigma is the largest ||M^T M x||^(1/2) over unit x in its span:
    never below the plain estimate from the same products (the power vectors lie in that span),
    and much closer to ||M||_2 when the top singular values cluster, as for convolutional nets.
    """
    positive_int(krylov, "krylov")
    vectors = [normalise(v.detach()) for v in vectors]
    sigmas = [torch.zeros(v.shape[0], dtype=v.dtype, device=v.device) for v in vectors]
    rows = [v.shape[0] for v in vectors]
    operators = at_rows(operators, products.y, rows)
    spaces = [([v], []) for v in vectors]                                    # (orthonormal basis, images) per block
    for step in range(iters):
        tangent = torch.cat([apply(op, q[-1]) for op, (q, _) in zip(operators, spaces)])
        cotangent = products.vjp(products.jvp(tangent))
        images = [apply_adjoint(op, g).detach() for op, g in zip(operators, cotangent.split(rows))]
        for (q, w), image in zip(spaces, images):
            w.append(image)
        if step + 1 == iters or len(spaces[0][0]) == krylov:  # every block's basis has the same length
            vectors, sigmas = map(list, zip(*[_refined(q, w) for q, w in spaces]))
            spaces = [([v], []) for v in vectors]
        else:
            spaces = [(q + [_orthonormal_to(q, w[-1])], w) for q, w in spaces]
    return vectors, sigmas


def with_and_without_operator(compute, operator: LinearOperator | None, j_operator: LinearOperator | None = None) -> dict:
    """{"fa": compute(operator), "f": compute(j_operator)}: a quantity for J(y) A and for J(y) (J(y) P with a
    projection ``j_operator`` P; an identity P is J); where both are the same map (identities) it is computed once."""
    if isinstance(j_operator, Identity):
        j_operator = None
    fa = compute(operator)
    return {"fa": fa, "f": fa if isinstance(operator, Identity) and j_operator is None else compute(j_operator)}


def random_unit_vectors(shape, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, *shape[1:]) unit vectors uniform on the sphere, drawn on the CPU generator."""
    z = torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype=like.dtype, device=like.device)
    return normalise(z)


def jacobian_input_shape(operator: LinearOperator | None, y: torch.Tensor) -> tuple[int, ...]:
    """Per-sample shape of the vectors J(y) A acts on: A's input shape, or y's (B, *shape) sample shape for J."""
    return tuple(operator.in_shape) if operator is not None else tuple(y.shape[1:])


def jacobian_spectral_norm(f, y: torch.Tensor, operator: LinearOperator | None = None, iters: int = 3,
                           v0: torch.Tensor | None = None, generator: torch.Generator | None = None,
                           return_vectors: bool = False, jvp_mode: str = "auto", krylov: int = 1):
    """Per-sample ||J(y_i) A||_2 (or ||J(y_i)||_2 when ``operator`` is None), shape (B,).

    ``iters`` detached power iterations from ``v0`` (random when None), then one
    differentiable evaluation ||J A v|| at the final unit vector v: a lower bound on
    the norm that converges to it, whose gradient with respect to f's parameters is
    that of the top singular value once v has converged (u^T d(JA) v).  ``krylov`` > 1 takes the
    best vector of a Krylov basis of that many vectors instead (see ``power_iteration``).
    With ``jvp_mode`` "finite_difference" (or "fastest" on a conv net) the iterations use finite
    differences and the differentiable evaluation forward mode.

    Returns the norms, and the final vectors (B, *input_shape) when ``return_vectors``.
    """
    positive_int(iters, "iters", minimum=0)
    refuse_batch_coupling(f)
    products = JacobianProducts(f, y, jvp_mode)
    shape = (y.shape[0], *jacobian_input_shape(operator, y))
    if v0 is None:
        v0 = random_unit_vectors(shape, y, generator)
    elif tuple(v0.shape) != shape:
        raise ValueError(f"v0 must have shape {shape}, got {tuple(v0.shape)}")
    (v,), _ = power_iteration(products, [operator], [v0], iters, krylov)
    if products.mode == "finite_difference":
        products = JacobianProducts(f, y, "forward")
    sigma = per_sample_norm(products.jvp(apply(at_rows([operator], y, [y.shape[0]])[0], v), create_graph=True))
    return (sigma, v) if return_vectors else sigma


def jacobian_frobenius_sq(f, y: torch.Tensor, operator: LinearOperator | None = None, n_projections: int = 1,
                          projection: str = "gaussian", generator: torch.Generator | None = None) -> torch.Tensor:
    """Unbiased per-sample estimates of ||J(y_i) A||_F^2 (or ||J(y_i)||_F^2), shape (B,), differentiable.

    ||M||_F^2 = E ||M^T z||^2 for z with E[z z^T] = I: "gaussian" N(0, I), "rademacher"
    (+-1, lower variance), or "sphere" (uniform unit z scaled by sqrt(d), the seed's
    Algorithm 1 made unbiased).  Averaged over ``n_projections`` draws.
    """
    refuse_batch_coupling(f)
    return frobenius_sq_estimates(JacobianProducts(f, y), [operator], n_projections, projection, generator)[0]


def frobenius_sq_estimates(products: JacobianProducts, operators, n_projections: int = 1,
                           projection: str = "gaussian", generator: torch.Generator | None = None):
    """One (B,) estimate of ||J A||_F^2 per entry of ``operators`` (None for J), sharing the draws z."""
    positive_int(n_projections, "n_projections")
    choice(projection, "projection", PROJECTIONS)
    out_shape = tuple(products.out.shape)
    d = math.prod(out_shape[1:])
    totals = [0.0] * len(operators)
    batch_operators = [op.at(products.y.detach()) if op is not None else None for op in operators]
    for _ in range(n_projections):
        z = torch.randn(out_shape, generator=generator, dtype=torch.float32)
        if projection == "rademacher":
            z = torch.sign(z) + (z == 0)
        elif projection == "sphere":
            z = normalise(z) * math.sqrt(d)
        z = z.to(dtype=products.out.dtype, device=products.out.device)
        jtz = products.vjp(z, create_graph=True)
        for k, op in enumerate(batch_operators):
            totals[k] = totals[k] + per_sample_norm(apply_adjoint(op, jtz)) ** 2
    return [t / n_projections for t in totals]
