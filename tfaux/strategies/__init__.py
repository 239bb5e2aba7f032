"""One file per method, all on the protocol of `base.Strategy`; METHODS names them.

METHODS maps a command-line name to (class, fixed constructor arguments, one-line help):
variants of one equation (JTDS's ablations, MGDA-UB) are rows, not classes. `get(name,
**args)` builds one; `method_args(name, text)` parses `--method_args=k=v,...` against
the class's constructor.
"""

import dataclasses

from tfaux import keyword_args
from tfaux.strategies.adaloss import AdaLoss
from tfaux.strategies.arml import ARML
from tfaux.strategies.auxilearn import AuxiLearn
from tfaux.strategies.base import Context, Strategy, ThetaVariables
from tfaux.strategies.dtg import DTGAuxL
from tfaux.strategies.dwa import DWA
from tfaux.strategies.equal import Equal
from tfaux.strategies.gcs import GCS
from tfaux.strategies.gradnorm import GradNorm
from tfaux.strategies.jtds import JTDS
from tfaux.strategies.label_generation import MAXL, AuxiLearnLabels, FrozenLabelGenerator
from tfaux.strategies.mgda import MGDA
from tfaux.strategies.njtds import NJTDS
from tfaux.strategies.pareto_mtl import ParetoMTL
from tfaux.strategies.ol_aux import OLAux
from tfaux.strategies.pcgrad import PCGrad
from tfaux.strategies.ptl import PTL
from tfaux.strategies.stl import STL
from tfaux.strategies.uncertainty import Uncertainty


@dataclasses.dataclass(frozen=True)
class Method:
    cls: type
    fixed: dict
    help: str


METHODS = {
    "stl": Method(STL, {}, "target task(s) only"),
    "equal": Method(Equal, {}, "fixed task weights (1 each, or --aux_weights / task_weights)"),
    "uniform": Method(Equal, dict(labelled_stream=True), "S4L Uniform: auxiliary weights 1 (or --aux_weights), the "
                      "targets' loss from a stream of labelled target examples (seed 003, Table 1)"),
    "jtds": Method(JTDS, {}, "JTDS task-data scheduler, implicit hypergradients (seed 000, Eq. 4)"),
    "jtds_only_task": Method(JTDS, dict(use_feature=False, use_loss=False), "JTDS ablation: task factor only"),
    "jtds_no_loss": Method(JTDS, dict(use_loss=False), "JTDS ablation: without the loss filter"),
    "jtds_no_feature": Method(JTDS, dict(use_feature=False), "JTDS ablation: without the feature term"),
    "jtds_normalized": Method(JTDS, dict(normalize=True), "JTDS with weights averaging 1 per batch (long runs)"),
    "njtds": Method(NJTDS, {}, "N-JTDS: one learned weight per (example, task) (seed 000, A.5)"),
    "auxilearn": Method(AuxiLearn, {}, "AuxiLearn learned monotone loss combiner, l_main + g(l) (seed 002); "
                        "combiner=nonlinear (default), linear or deep_linear"),
    "uncertainty": Method(Uncertainty, {}, "learned log-variance per task: 1/2 exp(-s_k) L_k + 1/2 s_k "
                          "(Kendall et al. 2018)"),
    "dwa": Method(DWA, {}, "dynamic weight average: w_k = K softmax(L_k(t-1) / L_k(t-2) / T), T = 2 "
                  "(Liu et al. 2019)"),
    "adaloss": Method(AdaLoss, {}, "w_k proportional to 1 / running average of L_k (Hu et al. 2019)"),
    "gradnorm": Method(GradNorm, {}, "task weights equalising gradient norms on the last shared layer, "
                       "alpha = 1.5 (Chen et al. 2018)"),
    "gcs": Method(GCS, {}, "gradient cosine similarity (Du et al. 2018); weighted=True scales by cos"),
    "cosinesim": Method(GCS, dict(weighted=False), "CosineSim: drop an auxiliary gradient with negative "
                        "cosine to the primary's (Du et al. 2018)"),
    "ol_aux": Method(OLAux, {}, "OL_AUX: auxiliary weights follow the accumulated g_main.g_k every N steps "
                     "(Lin et al. 2019)"),
    "pcgrad": Method(PCGrad, {}, "PCGrad: project each task gradient off the ones it conflicts with "
                     "(Yu et al. 2020)"),
    "arml": Method(ARML, {}, "ARML: auxiliary weights on {sum = K, >= 0} matched every 20 steps to the main "
                   "gradient, ||g_main - sum_k alpha_k g_k||^2 (seed 003; algorithm=1: Langevin stage)"),
    "arml_langevin": Method(ARML, dict(algorithm=1), "ARML's two-stage Alg. 1: Langevin noise on theta while "
                            "alpha converges, then alpha fixed (seed 003)"),
    "mgda": Method(MGDA, {}, "MGDA / MOOMTL: shared update along the min-norm convex combination of the "
                   "task gradients (Sener & Koltun 2018)"),
    "mgda_ub": Method(MGDA, dict(space="representation"), "MGDA-UB: MGDA on the gradients w.r.t. the shared "
                      "representation (Sener & Koltun 2018)"),
    "t_moomtl": Method(MGDA, dict(tasks="targets"), "t-MOOMTL: MGDA over the target tasks only, auxiliaries "
                       "not learned (seed 004)"),
    "ptl": Method(PTL, {}, "PTL: MGDA on the shared representation whose privileged (auxiliary) tasks weigh at "
                  "most c1 = 0.17 (seed 004, Eq. 12)"),
    "pareto_mtl": Method(ParetoMTL, {}, "Pareto-MTL: MGDA constrained to preference vector p of P "
                         "(Lin et al. 2019)"),
    "auxilearn_labels": Method(AuxiLearnLabels, {}, "AuxiLearn learned auxiliary labels: a generator network gives "
                               "psi = 5 soft sub-class labels per primary class (masked softmax), learned by the "
                               "implicit hypergradient of the dev loss (seed 002, Sec. 3.3)"),
    "maxl": Method(MAXL, {}, "MAXL: the same label generator learned by the one-step look-ahead meta-gradient "
                   "(Neumann K = 0) on training batches, plus 0.2 x the negative entropy of the mean generated "
                   "label (Liu et al. 2019)"),
    "maxl_f": Method(FrozenLabelGenerator, {}, "MAXL-F: the label generator frozen at its random initialisation "
                     "(seed 002, Sec. 5.4)"),
    "dtg_auxl": Method(DTGAuxL, {}, "DTG-AuxL: a joint generator makes a new auxiliary feature (from a primary "
                       "sample and a shuffled / auxiliary-dataset one) and a soft primary-space label (linear + MLP + "
                       "label bias), learned by the implicit hypergradient of the reordered training set's primary "
                       "loss plus an instance regulariser (seed 001)"),
    "dtg_auxl_no_aux": Method(DTGAuxL, dict(use_aux_labels=False), "DTG-AuxL ablation: the label generator sees "
                              "only primary labels (seed 001, A3)"),
    "dtg_auxl_no_data": Method(DTGAuxL, dict(generate_data=False), "DTG-AuxL ablation: no feature generator, the "
                               "generated task reads the sample's own feature (seed 001, A4)"),
    "dtg_auxl_no_linear": Method(DTGAuxL, dict(linear=False), "DTG-AuxL ablation: no linear term (seed 001, A6)"),
    "dtg_auxl_two_nonlinear": Method(DTGAuxL, dict(linear=False, nonlinear_terms=2), "DTG-AuxL ablation: the "
                                     "linear term replaced by a second non-linear one (seed 001, A6)"),
    "dtg_auxl_no_reg": Method(DTGAuxL, dict(reg_weight=0.0), "DTG-AuxL ablation: without the instance "
                              "regulariser (seed 001, A5)"),
}


class MethodError(ValueError):
    """A --method / --method_args problem; the message is one sentence."""


def help_text():
    """One line per method, for the --method flag's help."""
    return "; ".join(f"{name}: {m.help}" for name, m in METHODS.items())


def accepted_args(name):
    """Constructor arguments `--method_args` may set for method `name` (fixed ones excluded)."""
    method = METHODS[name]
    return keyword_args.accepted(method.cls.__init__, skip=tuple(method.fixed))


def method_args(name, text):
    """{argument: value} of `--method_args=k=v,...` (tfaux.keyword_args), names checked against
    the constructor."""
    if name not in METHODS:
        raise MethodError(f"Unknown method '{name}'; choose one of: {', '.join(sorted(METHODS))}.")
    try:
        return keyword_args.parse(text, accepted_args(name), "--method_args", f"method '{name}'")
    except keyword_args.KeywordArgsError as e:
        raise MethodError(str(e)) from None


def get(name, **kwargs):
    """A strategy by its command-line name, with constructor arguments `kwargs`."""
    if name not in METHODS:
        raise MethodError(f"Unknown method '{name}'; choose one of: {', '.join(sorted(METHODS))}.")
    method = METHODS[name]
    try:
        return method.cls(**{**method.fixed, **kwargs})
    except TypeError as e:
        raise MethodError(f"Method '{name}' cannot take these arguments ({e}).") from None
