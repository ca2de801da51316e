"""The drop probabilities' names (timm's ``drop_prob`` family), and the former names, which keep working for one
release with a FutureWarning."""
import warnings
from typing import Any

import pytest
import timm
import torch
from helpers import TINY

from timm_fer.cli.common import parse_model_kwargs
from timm_fer.layers import MultiAttentionDropping, MultiHeadSelfAttentionDropping, apply_msad, multi_attention_dropping


def _vit(**kwargs: Any) -> torch.nn.Module:
    return apply_msad(timm.create_model('vit_tiny_patch16_224', img_size=32, depth=1), **kwargs)


def _transfer(**kwargs: Any) -> torch.nn.Module:
    return timm.create_model('transfer_fer_ir50', **TINY, **kwargs)


RENAMED = {
    'MultiAttentionDropping': (lambda **kw: MultiAttentionDropping(dim=1, **kw), 'p', 'drop_prob',
                               lambda module: module.drop_prob),
    'apply_msad': (_vit, 'p', 'drop_prob', lambda model: model.blocks[0].attn.attn_head_drop.drop_prob),
    'MultiHeadSelfAttentionDropping': (lambda **kw: MultiHeadSelfAttentionDropping(16, num_heads=2, **kw),
                                       'head_drop_prob', 'attn_head_drop_prob',
                                       lambda module: module.attn_head_drop.drop_prob),
    'TransFER MAD': (_transfer, 'mad_prob', 'mad_drop_prob', lambda model: model.local_cnn.branch_drop.drop_prob),
    'TransFER MSAD': (_transfer, 'msad_prob', 'msad_drop_prob',
                      lambda model: model.blocks[0].attn.attn_head_drop.drop_prob),
}
"""What takes a renamed keyword: (factory, former name, name, where the value lands)."""


@pytest.mark.parametrize('case', RENAMED)
def test_new_name_sets_the_probability_without_warning(case):
    make, _, new, value_of = RENAMED[case]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert value_of(make(**{new: 0.25})) == 0.25


@pytest.mark.parametrize('case', RENAMED)
def test_former_name_still_works_with_a_future_warning(case):
    make, old, new, value_of = RENAMED[case]
    with pytest.warns(FutureWarning, match=f"'{old}' is renamed '{new}'"):
        assert value_of(make(**{old: 0.25})) == 0.25


def test_functional_mad_takes_drop_prob_and_its_former_name():
    x = torch.ones(64, 2)
    assert multi_attention_dropping(x, drop_prob=1., training=True).eq(0).sum(dim=1).eq(1).all()
    with pytest.warns(FutureWarning, match="'p' is renamed 'drop_prob'"):
        assert multi_attention_dropping(x, p=0., training=True) is x


def test_training_command_line_keeps_the_former_model_kwargs():
    """``--model-kwargs in_chans=1 mad_prob=0 msad_prob=0`` (the README's training commands) still builds the model:
    the former names win over the entrypoint's defaults, which use the new names."""
    kwargs = parse_model_kwargs(['in_chans=1', 'mad_prob=0', 'msad_prob=0'])
    with pytest.warns(FutureWarning) as caught:
        model = timm.create_model('transfer_fer_compact', **kwargs)
    assert {str(w.message).split()[0] for w in caught} == {"'mad_prob'", "'msad_prob'"}
    assert model.local_cnn.branch_drop.drop_prob == 0.
    assert all(block.attn.attn_head_drop.drop_prob == 0. for block in model.blocks)


def test_apply_msad_needs_a_probability():
    with pytest.raises(TypeError, match='drop_prob'):
        apply_msad(timm.create_model('vit_tiny_patch16_224', img_size=32, depth=1))


def test_each_dropping_module_name_means_one_thing():
    """``head_drop`` is timm's dropout before the classifier only; MAD over LANet maps is ``branch_drop`` and MAD
    over attention heads ``attn_head_drop``; ``attn_drop`` stays the dropout on the attention weights."""
    model = _transfer()
    assert isinstance(model.head_drop, torch.nn.Dropout)
    assert isinstance(model.local_cnn.branch_drop, MultiAttentionDropping)
    assert all(isinstance(block.attn.attn_head_drop, MultiAttentionDropping) for block in model.blocks)
    assert all(isinstance(block.attn.attn_drop, torch.nn.Dropout) for block in model.blocks)
    assert [name for name, _ in model.named_modules() if name.endswith('head_drop') and 'attn' not in name] == \
        ['head_drop']
