"""Mutation score of the method losses from a finished ``mutmut run`` (``./run_all.sh --mutants``).

Reads ``mutants/methods/*.py.meta`` (mutmut's result per mutant) and the mutated sources,
and prints, per module, the killed mutants out of those that can change a loss value.

Rule for the mutants left out (they cannot change any loss value):
* mutants whose only change is inside a ``raise`` statement (the text or type of an error
  message; the condition that raises is *not* left out), or drops or nulls a ``device=``
  argument (a wrong device raises, it cannot change a value);
* mutants of ``describe`` / ``_validate_options`` (metadata and option validation);
* the survivors reviewed one by one in :data:`EQUIVALENT`, each with the reason it cannot
  change a value (a keyword set to its default, a scale that cancels, ...).
Every other mutant counts. Killed = a test failed (or timed out); survived = every test
passed; "no tests" (no selected test reaches the function) counts as survived.

Usage: ``python tests/mutation_score.py [--survivors] [MODULE ...]`` from the repository root.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

# Mutants reviewed as unable to change any loss value (numbering as of the sources they were
# reviewed against; a changed module renumbers its mutants, so re-review its survivors).
EQUIVALENT: dict[str, str] = {
    **{f"methods.kd.x_kd_loss__mutmut_{n}": "log_softmax dim=None or omitted: torch's implicit dim of 2-D is 1"
       for n in (3, 5, 10, 12)},
    **{f"methods.pkt.x_cosine_conditional_probabilities__mutmut_{n}": "nan_to_num nan=None/omitted: default 0.0"
       for n in (12, 14)},
    **{f"methods.pkt.x_cosine_conditional_probabilities__mutmut_{n}": "kernel scale cancels in the row normalisation"
       for n in (19, 22)},
    "methods.rkd.x_pairwise_distances__mutmut_15": "bool mask .to(None): bool times float promotes to the same values",
    **{f"methods.rkd.x_triplet_angles__mutmut_{n}": "F.normalize p=None/omitted: default p=2" for n in (9, 12)},
    **{f"methods.samd.x_semantic_attention__mutmut_{n}": "shape index of a 3-D CAM: a same-size bilinear resize is "
       "the identity" for n in (16, 17)},
    **{f"methods.samd.x_semantic_attention__mutmut_{n}": "align_corners=None/omitted: default False" for n in (24, 28)},
    "methods.samd.xǁSAMDǁ__init____mutmut_1": "ctx=None: SAMD never reads ctx after construction",
    "methods.crd.x_sample_other_class_rows__mutmut_21": "mask key -2 for -1: any negative key ranks a masked "
    "row below every uniform key in [0, 1)",
    "methods.crd.x_sample_other_class_rows__mutmut_25": "topk dim omitted: the default -1 is dim 1 of the 2-D keys",
    "methods.crd.xǁCRDǁ__init____mutmut_1": "ctx=None: CRD never reads ctx after construction",
    **{f"methods.crd.xǁCRDǁ__init____mutmut_{n}": "label dtype dropped: integer labels of any dtype compare equal "
       "(torch.equal and == ignore the integer dtype)" for n in (25, 27, 33, 35)},
    **{f"methods.crd.xǁCRDǁ__init____mutmut_{n}": "persistent=None is persistent=False" for n in (48, 57)},
    **{f"methods.crd.xǁCRDǁ__init____mutmut_{n}": "Z sentinel -2 for -1: any negative value means 'not yet set'"
       for n in (106, 115)},
    "methods.crd.xǁCRDǁ_contrast__mutmut_30": "einsum subscripts in upper case: the same contraction",
    "methods.crd.xǁCRDǁ_contrast__mutmut_38": "z <= 0 for z < 0: z is -1 until set, then mean(exp(.)) * N > 0",
    "methods.crd.xǁCRDǁlosses__mutmut_2": "device None: .to(device=None) keeps the device; a wrong device raises",
    **{f"methods.crd.xǁCRDǁlosses__mutmut_{n}": "index/label dtype dropped: integer tensors of any dtype index, "
       "compare and concatenate the same rows; a non-integer index raises" for n in (5, 7, 10, 12, 15, 17)},
    **{f"methods.crd.xǁEmbedǁforward__mutmut_{n}": "F.normalize p=None/omitted is p=2, dim omitted is dim=1"
       for n in (2, 5, 6)},
    "methods.fitnets.x_hint_loss__mutmut_7": "every row a twin: the mean of per-row map MSEs is the batch MSE "
    "(rows of equal size)",
    "methods.fitnets.x_hint_loss__mutmut_38": "twin.to(None) keeps the device; a wrong device raises",
    "methods.fitnets.xǁFitNetsǁ__init____mutmut_1": "ctx=None: FitNets never reads ctx after construction",
    "methods.fitnets.xǁFitNetsǁlosses__mutmut_30": "shape[+2:] of a 4-D map is shape[-2:]",
    **{f"methods.fitnets.xǁHintRegressorǁ__init____mutmut_{n}": "a conv bias (None is False) before batch norm: "
       "the per-channel constant cancels in the normalisation" for n in (20, 33, 39, 46)},
    **{f"methods.fitnets.xǁHintRegressorǁ__init____mutmut_{n}": "ReLU inplace None/False: the same values "
       "(the BN output is read by nothing else)" for n in (50, 51)},
    "methods.fitnets.xǁHintRegressorǁforward__mutmut_4": "shape[+2:] of a 4-D map is shape[-2:]",
    "methods.fitnets.xǁHintRegressorǁforward__mutmut_5": "shape[-3:] never equals the size, so it always resizes; "
    "a same-size bilinear resize is the identity",
    **{f"methods.fitnets.xǁHintRegressorǁforward__mutmut_{n}": "align_corners=None/omitted: default False"
       for n in (12, 16)},
    **{f"methods.cpc_trans.x_attention_map_distance__mutmut_{n}": "a shape slice that never matches makes it "
       "always resize; a same-size bilinear resize is the identity" for n in (1, 2, 4, 5)},
    **{f"methods.cpc_trans.x_attention_map_distance__mutmut_{n}": "align_corners=None/omitted: default False"
       for n in (10, 14)},
    "methods.cpc_trans.x_fixed_width_map__mutmut_22": "d_out < d_in for <=: differs only for equal widths, where "
    "CPC-Trans uses no map",
    **{f"methods.cpc_trans.xǁ{cls}ǁ__init____mutmut_1": "ctx=None: the method never reads ctx after construction"
       for cls in ("CPCTrans", "CPCTransShared")},
    "methods.cpc_trans.xǁCPCTransǁ__init____mutmut_22": "persistent=None is persistent=False",
    **{f"methods.cpc_trans.xǁ{cls}ǁlosses__mutmut_{n}": "ones_like of the bool twin mask without dtype=bool: "
       "the same bool mask" for cls, n in (("CPCTrans", 20), ("CPCTrans", 22), ("CPCTransShared", 31),
                                          ("CPCTransShared", 33))},
    "methods.cpc_trans.xǁCPCTransǁto_teacher_width__mutmut_2": ".to(None) for a dtype cast: identity in float32",
    "methods.cpc_trans.xǁClassTokenAttentionǁ__init____mutmut_1": "dropout default: every caller passes it",
    "methods.cpc_trans.xǁClassTokenAttentionǁforward__mutmut_19": "need_weights omitted: default True",
    **{f"methods.ssd_kd.xǁConvRegǁ__init____mutmut_{n}": "align_corners=None/omitted: default False"
       for n in (63, 66)},
    **{f"methods.ssd_kd.{fn}__mutmut_{n}": "ReLU inplace None/False: the same values"
       for fn, n in (("xǁConvRegǁ__init__", 84), ("xǁConvRegǁ__init__", 85), ("x_projection_head", 11),
                     ("x_projection_head", 12))},
    **{f"methods.ssd_kd.x_pairwise_distance__mutmut_{n}": "torch.eye dtype dropped: 0/1 exact in every dtype, "
       "the product promotes" for n in (18, 21)},
    **{f"methods.ssd_kd.x_rkd_angle__mutmut_{n}": "F.normalize p=None/omitted: default p=2" for n in (3, 6)},
    **{f"methods.ssd_kd.x_rotation_similarity__mutmut_{n}": "F.normalize dim omitted: default dim=1 of a 2-D input"
       for n in (12, 18)},
    "methods.crckd.x_nce_loss__mutmut_21": "every row has P positives: the mean of the row means is the mean of all",
    "methods.crckd.x_random_rot_flip__mutmut_17": "rand() <= 0.5 for < 0.5: differs only on a draw of exactly 0.5",
    "methods.crckd.x_random_rot_flip__mutmut_24": "randint(4, size) is randint(0, 4, size)",
    **{f"methods.crckd.x_random_rot_flip__mutmut_{n}": "axis +2 for -2 of the 4-D image batch: the same axis"
       for n in (4, 38, 56)},
    "methods.crckd.x_random_rot_flip__mutmut_43": "range(4) adds k = 0: a rotation by 0 is the identity",
    "methods.crckd.x_random_rot_flip__mutmut_46": "range(1, 5) adds k = 4, which randint(0, 4) never draws",
    **{f"methods.crckd.x_relation_kl__mutmut_{n}": "F.normalize dim omitted: default dim=1" for n in (6, 13)},
    **{f"methods.crckd.{fn}__mutmut_{n}": "(log_)softmax dim=None/omitted: torch's implicit dim of 2-D is 1"
       for fn, n in (("x_relation_kl", 22), ("x_relation_kl", 24), ("x_relation_kl", 27), ("x_relation_kl", 29),
                     ("x_softmax_kl", 3), ("x_softmax_kl", 5), ("x_softmax_kl", 14), ("x_softmax_kl", 16))},
    "methods.crckd.xǁCRCKDǁbind__mutmut_2": "teacher handle None: crckd never reads it (its teacher is the EMA copy)",
    **{f"methods.crckd.xǁClassIndexǁ__init____mutmut_{n}": "label dtype dropped: integer labels of any dtype "
       "count, index and compare the same; non-integer labels raise in bincount" for n in (3, 5)},
    **{f"methods.crckd.xǁClassIndexǁ__init____mutmut_{n}": "argsort without stable=True: pos_in_class follows the "
       "same order, and torch's sort keeps ties in order at these sizes" for n in (23, 24)},
    **{f"methods.crckd.{fn}__mutmut_{n}": "persistent=None is persistent=False"
       for fn, n in (("xǁClassIndexǁ__init__", 61), ("xǁClassIndexǁ__init__", 70), ("xǁClassIndexǁ__init__", 79),
                     ("xǁClassIndexǁ__init__", 88), ("xǁ_CRCKDBaseǁ__init__", 84))},
    **{f"methods.crckd.{fn}__mutmut_{n}": "persistent buffer: saved in state_dict or not, it is rebuilt from the "
       "context with the same values" for fn, n in (("xǁClassIndexǁ__init__", 64), ("xǁClassIndexǁ__init__", 67),
                                                    ("xǁClassIndexǁ__init__", 73), ("xǁClassIndexǁ__init__", 76),
                                                    ("xǁClassIndexǁ__init__", 82), ("xǁClassIndexǁ__init__", 85),
                                                    ("xǁClassIndexǁ__init__", 91), ("xǁClassIndexǁ__init__", 94),
                                                    ("xǁ_CRCKDBaseǁ__init__", 87), ("xǁ_CRCKDBaseǁ__init__", 90))},
    "methods.crckd.xǁClassIndexǁsample__mutmut_32": "anchor score 3 for 2: any score above 1 beats every draw in "
    "[0, 1)",
    **{f"methods.crckd.xǁClassIndexǁsample__mutmut_{n}": "topk dim omitted: the default -1 is dim 1 of 2-D scores"
       for n in (37, 50)},
    "methods.crckd.xǁContrastBankǁ__init____mutmut_31": "Z sentinel -2 for -1: any negative value means 'not yet set'",
    "methods.crckd.xǁContrastBankǁscores__mutmut_14": "z <= 0 for z < 0: z is -1 until set, then mean(exp(.)) * N > 0",
    "methods.crckd.xǁEmbedǁ__init____mutmut_1": "dim_out default: every caller passes it",
    "methods.crckd.xǁEmbedǁforward__mutmut_4": "F.normalize dim omitted: default dim=1",
    "methods.crckd.xǁ_CRCKDBaseǁlosses__mutmut_13": ".to(None) for a dtype cast: identity in float32",
    **{f"methods.polypsalign.{fn}__mutmut_{n}": "(log_)softmax dim None/omitted/+1: on 2-D logits the implicit dim "
       "and dim 1 are the last" for fn in ("x__kl_mean", "x_contrastive_hinge") for n in (3, 5, 6)},
    "methods.polypsalign.xǁPolypsAlignǁ__init____mutmut_1": "ctx=None: PolypsAlign never reads ctx after construction",
    "methods.polypsalign.xǁPolypsAlignǁ__init____mutmut_34": "bias=None is bias=False",
    **{f"methods.polypsalign.xǁPolypsAlignǁbind__mutmut_{n}": "bound student/teacher handle None: PolypsAlign never "
       "reads them (the harness runs both networks; the raw student copies the argument)" for n in (1, 2)},
    **{f"methods.polypsalign.xǁPolypsAlignǁlosses__mutmut_{n}": "ones_like of the bool twin mask without dtype=bool: "
       "the same bool mask" for n in (37, 39)},
    "methods.polypsalign.xǁPolypsAlignǁadapt__mutmut_4": "shape[+2:] of a 4-D map is shape[-2:]",
    "methods.polypsalign.xǁPolypsAlignǁadapt__mutmut_5": "shape[-3:] never equals the size, so it always resizes; a "
    "same-size bilinear resize is the identity",
    **{f"methods.polypsalign.xǁPolypsAlignǁadapt__mutmut_{n}": "align_corners=None/omitted: default False"
       for n in (11, 15)},
    "methods.polypsalign.xǁPolypsAlignǁadversary_optimizer__mutmut_16": "betas omitted: Adam's default (0.9, 0.999)",
    **{f"methods.ssd_kd.x_interleave_rotations__mutmut_{n}": "classifier of the teacher views: SSD-KD never reads it"
       for n in (27, 31)},
    **{f"methods.ssd_kd.x_ranked_keep__mutmut_{n}": "argsort without stable=True: torch's sort keeps ties in order at "
       "these sizes (not decidable by a deterministic test)" for n in (31, 32)},
    "methods.ssd_kd.x_ranked_keep__mutmut_6": "argsort dim omitted: the default -1 is dim 1 of 2-D scores",
    "methods.ssd_kd.x_rotation_batch__mutmut_12": "rot90 axis +2 for -2 of the 4-D image batch: the same axis",
    **{f"methods.ssd_kd.{fn}__mutmut_{n}": "device None: the mask/targets are built on the CPU; the values are the "
       "same, a wrong device raises" for fn, n in (("x_rotation_similarity", 5), ("xǁSSDKDǁlosses", 22),
                                                   ("xǁSSDKDǁlosses", 88), ("xǁSSDKDǁprepare", 72))},
    "methods.ssd_kd.xǁSSDKDǁ__init____mutmut_1": "ctx=None: SSD-KD never reads ctx after construction",
    "methods.ssd_kd.xǁSSDKDǁ__init____mutmut_40": "persistent=None is persistent=False",
    **{f"methods.ssd_kd.xǁSSDKDǁ__init____mutmut_{n}": "persistent buffer: saved in state_dict or not, it is rebuilt "
       "from the context with the same values" for n in (43, 46)},
    "methods.ssd_kd.xǁSSDKDǁ__init____mutmut_47": "prepared=None: falsy like False until prepare() sets True",
    "methods.ssd_kd.xǁSSDKDǁ__init____mutmut_49": "ss_history=None: read only after prepare(), which resets it",
    "methods.ssd_kd.xǁSSDKDǁlosses__mutmut_33": ".to(None) for a dtype cast: identity in float32",
    "methods.ssd_kd.xǁSSDKDǁlosses__mutmut_91": "n / 4 for n // 4 (n a multiple of 4): arange of the integral float "
    "gives the same targets, compared with == to integer indices",
    "methods.ssd_kd.xǁSSDKDǁlosses__mutmut_14": "teacher views all forwarded instead of reusing the harness's "
    "0-degree output: the frozen eval-mode teacher gives the same values on the same image (only the cost differs)",
    "methods.ssd_kd.xǁSSDKDǁprepare__mutmut_47": "milestone max(2, round(0.75 E)) differs only for E = 1, where no "
    "milestone falls inside the run",
    "methods.ssd_kd.xǁSSDKDǁprepare__mutmut_57": "gamma omitted: MultiStepLR's default 0.1",
    **{f"methods.ssd_kd.xǁSSDKDǁprepare__mutmut_{n}": "gradients zeroed instead of set to None before a backward "
       "that fills every parameter's gradient: the same SGD step" for n in (82, 83)},
    **{f"methods.ssd_kd.xǁSSDKDǁprepare__mutmut_{n}": "max(2, rows) = rows: every batch adds 3 rows per image"
       for n in (104, 112)},
    **{f"methods._dense.{fn}__mutmut_{n}": "dtype dropped or .to(None): float32, the precision of the losses "
       "(mixed precision is autocast's)" for fn, n in (
           ("x__as_additive", 7), ("x__as_additive", 10), ("x__as_additive", 16), ("x__attend", 27),
           ("x__position_distances", 4), ("x__position_distances", 7), ("x_class_activation_map", 15),
           ("x_masked_attention", 38), ("x_pixel_adaptive_refinement", 103), ("x_pixel_adaptive_refinement", 35),
           ("x_relation_mask", 8), ("x_relation_mask", 11))},
    **{f"methods._dense.{fn}__mutmut_{n}": "float('-INF') is float('-inf')"
       for fn, n in (("x__as_additive", 15), ("x_relation_mask", 26))},
    **{f"methods._dense.x__neighbour_index__mutmut_{n}": "the 8-neighbourhood is symmetric under dy -> -dy "
       "(dx -> -dx): the same neighbours in another order, each with its own distance" for n in (25, 35)},
    "methods._dense.x_class_activation_map__mutmut_25": "einsum subscripts in upper case: the same contraction",
    **{f"methods._dense.x_dual_threshold_labels__mutmut_{n}": "torch.full with the integer fill -1 infers int64"
       for n in (9, 13)},
    "methods._dense.x_masked_attention__mutmut_100": "chunk_size == Lq: one chunk of every row, the same values",
    **{f"methods._dense.x_masked_attention__mutmut_{n}": "checkpointed or not, reentrant or not: the chunk is "
       "recomputed to the same values (peak memory only)" for n in (114, 115, 159, 167, 168)},
    "methods._dense.x_masked_attention__mutmut_59": "a constant on a fully blocked row cancels in its softmax, and the "
    "row's output is zeroed afterwards",
    "methods._dense.x_masked_attention__mutmut_62": "q.dim() > 2 or True: an unbatched q has batch () -> 1 as well",
    "methods._dense.x_masked_attention__mutmut_72": "q.dim() >= 2: an unbatched q has batch () -> 1 as well",
    "methods._dense.x_pixel_adaptive_refinement__mutmut_1": "num_iter default: every caller passes it",
    "methods._dense.x_relation_weight__mutmut_1": "ambiguous default: every caller passes it",
    **{f"methods._dense.x_pixel_adaptive_refinement__mutmut_{n}": "device None: the index/distances are built on "
       "the CPU; the values are the same, a wrong device raises" for n in (61, 102)},
    **{f"methods._dense.x_pixel_adaptive_refinement__mutmut_{n}": "-1e-8 for +1e-8 next to a std that is 0 (then "
       "the difference is 0 too) or far above float32 resolution" for n in (89, 112)},
    "methods._dense.x_pixel_adaptive_refinement__mutmut_36": "shape[+2:] of a 4-D image is shape[-2:]",
    "methods._dense.x_pixel_adaptive_refinement__mutmut_37": "shape[-3:] never equals the grid, so it always "
    "resizes; a same-size bilinear resize is the identity",
    **{f"methods._dense.x_pixel_adaptive_refinement__mutmut_{n}": "align_corners=None/omitted: default False"
       for n in (43, 48)},
    "methods._dense.x_masked_attention__mutmut_79": "at exactly the limit, limit // (batch x Lk) = Lq: one block "
    "either way",
    **{f"methods.pagkd_released.x_identity_codes__mutmut_{n}": "arange dtype dropped: int64 positions + 0.1 promote "
       "to the default float32" for n in (10, 12)},
    **{f"methods.pagkd_released.{fn}__mutmut_{n}": "defaults every caller passes explicitly"
       for fn, n in (("x_pairwise_group_loss", 1), ("x_pairwise_group_loss", 2),
                     ("x__pairwise_group_loss_direct", 1), ("x__pairwise_group_loss_direct", 2),
                     ("x_relation_reconstruction_loss", 1), ("x_released_set_similarity", 1))},
    **{f"methods.pagkd_released.{fn}__mutmut_{n}": "cosine_similarity dim omitted (default 1) or eps omitted "
       "(default 1e-8)" for fn, n in (("x__pairwise_group_loss_direct", 58), ("x__pairwise_group_loss_direct", 59),
                                      ("x_relation_reconstruction_loss", 40), ("x_relation_reconstruction_loss", 41))},
    **{f"methods.pagkd_released.x_pairwise_group_loss__mutmut_{n}": "einsum subscripts in upper case: the same "
       "contraction" for n in (90, 112, 141, 152)},
    **{f"methods.pagkd_released.x_pairwise_group_loss__mutmut_{n}": "relation weight or mask .to(None): their "
       "values (0, 0.5 or the confuse value, 1; 0 or -1e9) are exact in float32 and promote with the scores"
       for n in (96, 97)},
    **{f"methods.pagkd_released.{fn}__mutmut_{n}": "dtype dropped or .to(None): float32, the precision of the losses "
       "(mixed precision is autocast's)" for fn, n in (
           ("x_released_contrastive_loss", 58), ("x_released_contrastive_loss", 62),
           ("xǁReleasedQFormerǁforward", 5), ("xǁReleasedQFormerǁforward", 9), ("xǁReleasedQFormerǁforward", 14),
           ("xǁReleasedQFormerǁforward", 16), ("xǁReleasedQFormerǁforward", 41))},
    "methods.pagkd_released.x_released_contrastive_loss__mutmut_71": "float('-INF') is float('-inf')",
    **{f"methods.pagkd_released.x_released_set_similarity__mutmut_{n}": "F.normalize dim omitted: default dim=1"
       for n in (6, 12)},
    "methods.pagkd_released.x_released_set_similarity__mutmut_22": "einsum subscripts in upper case: the same "
    "contraction",
    **{f"methods.pagkd_released.xǁPaGKDReleasedǁ__init____mutmut_{n}": "bias=None is bias=False" for n in (32, 55)},
    "methods.pagkd_released.xǁPaGKDReleasedǁ__init____mutmut_46": "kaiming_normal_'s default leaky_relu with a=0 has "
    "the ReLU gain sqrt(2)",
    "methods.pagkd_released.xǁPaGKDReleasedǁ__init____mutmut_48": "kaiming_normal_ lower-cases the mode",
    **{f"methods.pagkd_released.xǁReleasedQFormerǁforward__mutmut_{n}": "need_weights None/True/omitted: the "
       "attention output is the same, the weights are discarded" for n in (52, 57, 58)},
    **{f"methods.add.x_cosine_distance__mutmut_{n}": "cosine_similarity dim omitted (default 1) or eps omitted "
       "(default 1e-8)" for n in (9, 10)},
    "methods.add.xǁADDǁ__init____mutmut_1": "ctx=None: ADD never reads ctx after construction",
    **{f"methods.add.xǁADDǁ__init____mutmut_{n}": "bias=None is bias=False" for n in (17, 30)},
    **{f"methods.add.xǁADDǁ_rows__mutmut_{n}": "ones_like of the bool twin mask without dtype=bool: the same bool mask"
       for n in (4, 6)},
    **{f"methods.add.xǁADDǁdense_losses__mutmut_{n}": "logits/embedding of the selected rows: dense_pseudo_labels "
       "reads only the maps and the head" for n in (25, 26, 36, 37)},
    "methods.pagkd.x__anchored_infonce__mutmut_8": "the similarity matrix is square",
    **{f"methods.pagkd.x_group_position_embedding__mutmut_{n}": "defaults every caller passes explicitly"
       for n in (1, 2)},
    "methods.pagkd.x_group_position_embedding__mutmut_11": "a (hw, d) zero tensor broadcasts to the same sum",
    **{f"methods.pagkd.x_group_position_embedding__mutmut_{n}": "dim / 2 for dim // 2 (dim % 4 == 0): same values"
       for n in (38, 44)},
    **{f"methods.pagkd.x_group_units__mutmut_{n}": "torch.unique returns sorted values whatever sorted= says"
       for n in (7, 10)},
    **{f"methods.pagkd.x_group_units__mutmut_{n}": "argsort without stable=True: torch's sort keeps ties in order "
       "at these sizes (not decidable by a deterministic test)" for n in (17, 18)},
    **{f"methods.pagkd.x_group_units__mutmut_{n}": "empty-batch branch: an empty batch never reaches losses"
       for n in (35, 37)},
    "methods.pagkd.x_masked_mse__mutmut_9": "bool weights give the same sums",
    "methods.pagkd.x_set_similarity__mutmut_23": "einsum subscripts in upper case: the same contraction",
    **{f"methods.pagkd.x_standardise_channels__mutmut_{n}": "keepdim dropped: a (d,) statistic broadcasts over the "
       "last axis the same way" for n in (7, 10, 16, 20)},
    "methods.pagkd.xǁAveragePrototypesǁforward__mutmut_12": "summing size-1 axes 2 or 3 is the same",
    "methods.pagkd.xǁAveragePrototypesǁforward__mutmut_2": "bool weights give the same sums",
    **{f"methods.pagkd.xǁLRQFormerǁ__init____mutmut_{n}": "defaults PaGKD always passes explicitly"
       for n in (1, 2, 3, 4)},
    "methods.pagkd.xǁLRQFormerǁforward__mutmut_15": "spatial= default True equals the only value PaGKD uses",
    **{f"methods.pagkd.xǁLRQFormerǁforward__mutmut_{n}": ".to(None) for a dtype cast: identity in float32 (the "
       "tests' precision; mixed precision is autocast's)" for n in (28, 45)},
    "methods.pagkd.xǁSRCAǁforward__mutmut_14": ".to(None) for a dtype cast: identity in float32",
    "methods.pagkd.xǁPaGKDǁ__init____mutmut_1": "ctx=None: only the constructor reads ctx (passed directly)",
    "methods.pagkd.xǁPaGKDǁ__init____mutmut_76": "ffn_ratio dropped: LRQFormer's default 4 equals the option's",
    **{f"methods.pagkd.xǁPaGKDǁ__init____mutmut_{n}": "bias=None is bias=False" for n in (39, 52)},
    "methods.pagkd.xǁSRCAǁ__init____mutmut_7": "bias=None is bias=False",
    **{f"methods.pagkd.xǁSRCAǁ__init____mutmut_{n}": "a key bias adds q.b to every logit of a row: softmax "
       "is invariant to it" for n in (17, 20, 23)},
    **{f"methods.pagkd.xǁSRCAǁ__init____mutmut_{n}": "scale None or width / 4: masked_attention's default "
       "1/sqrt(d/4) and width % 4 == 0 give the same scale" for n in (24, 28)},
    **{f"methods.pagkd.xǁSRCAǁforward__mutmut_{n}": "scale=None/omitted: masked_attention's default is "
       "1/sqrt(q width) = 1/sqrt(d/4)" for n in (8, 13)},
    **{f"methods.pagkd.xǁPaGKDǁ{fn}__mutmut_{n}": "shape[+2] of a 4-D map is shape[-2]"
       for fn, n in (("dense_loss", 25), ("dense_loss", 32), ("prototype_loss", 11), ("prototype_loss", 23))},
}

KILLED = {1, 3, 36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}
NOT_VALUE_FUNCTIONS = {"describe", "_validate_options"}
_NAME = re.compile(r"^(?P<func>.+)__mutmut_(?P<n>\d+)$")


class _StripRaise(ast.NodeTransformer):
    """Blank every ``raise`` statement and drop ``device=`` keywords: a mutant that differs only
    there changes an error message, or puts a tensor on the wrong device (which raises on a GPU
    and is the identity on the CPU); neither can change a loss value silently."""

    def visit_Raise(self, node: ast.Raise) -> ast.Raise:
        return ast.Raise(exc=None, cause=None)

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        node.keywords = [k for k in node.keywords if k.arg != "device"]
        node.args = [a for a in node.args if not (isinstance(a, ast.Attribute) and a.attr == "device")]
        return node


def _normalised(fn: ast.FunctionDef) -> str:
    fn = ast.parse(ast.unparse(fn)).body[0]
    fn.name = "f"
    if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(getattr(fn.body[0], "value", None), ast.Constant):
        fn.body = fn.body[1:]
    return ast.dump(_StripRaise().visit(fn))


def _functions(source: Path) -> dict[str, ast.FunctionDef]:
    found: dict[str, ast.FunctionDef] = {}
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.FunctionDef) and "__mutmut_" in node.name:
            found[node.name] = node
    return found


def module_score(meta: Path) -> dict:
    module = meta.name.removesuffix(".py.meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    functions = _functions(meta.with_name(module + ".py"))
    row = {"module": module, "mutants": 0, "excluded": 0, "killed": 0, "survived": [], "no_tests": 0,
           "not_checked": 0}
    for key, code in sorted(codes.items()):
        name = key.rsplit(".", 1)[-1]
        match = _NAME.match(name)
        func = match.group("func") if match else name
        short = func.split("ǁ")[-1].removeprefix("x_")
        row["mutants"] += 1
        orig = functions.get(f"{func}__mutmut_orig")
        if key in EQUIVALENT or short in NOT_VALUE_FUNCTIONS or (
            orig is not None and name in functions and _normalised(functions[name]) == _normalised(orig)
        ):
            row["excluded"] += 1
        elif code is None:
            row["not_checked"] += 1
        elif code in KILLED:
            row["killed"] += 1
        else:
            row["survived"].append(key)
            if code in NO_TESTS:
                row["no_tests"] += 1
    counted = row["mutants"] - row["excluded"] - row["not_checked"]
    row["score"] = row["killed"] / counted if counted else float("nan")
    return row


def main(argv: list[str]) -> int:
    show = "--survivors" in argv
    wanted = [a for a in argv if not a.startswith("--")]
    print("| module | mutants | left out (rule) | checked | killed | survived (no tests) | score |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for meta in sorted(Path("mutants/methods").glob("*.py.meta")):
        row = module_score(meta)
        if wanted and row["module"] not in wanted:
            continue
        checked = row["mutants"] - row["excluded"] - row["not_checked"]
        if not checked:
            continue
        rows.append(row)
        print(f"| {row['module']} | {row['mutants']} | {row['excluded']} | {checked} | {row['killed']} | "
              f"{len(row['survived'])} ({row['no_tests']}) | {100 * row['score']:.1f} % |")
    if show:
        for row in rows:
            for key in row["survived"]:
                print(key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
