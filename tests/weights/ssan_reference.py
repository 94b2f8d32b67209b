"""The official SSAN network in PyTorch, for parity tests: module names as in the official
release (src/model/model.py, text_feature_extract.py), behaviour per ssan §2 in eval mode,
trunk and LSTM from torchvision and `torch.nn.LSTM`. Written for these tests from the spec.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Pointwise(nn.Module):
    """The official `conv` block: 1x1 Conv2d without bias [+ BatchNorm2d] [+ LeakyReLU 0.25];
    [N, C, 1, 1] -> [N, O]."""

    def __init__(self, inputs: int, outputs: int, relu: bool = False, bn: bool = False):
        super().__init__()
        layers = [nn.Conv2d(inputs, outputs, kernel_size=1, bias=False)]
        layers += [nn.BatchNorm2d(outputs)] if bn else []
        layers += [nn.LeakyReLU(0.25)] if relu else []
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return self.block(x)[:, :, 0, 0]


class TextExtract(nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.embedding_local = nn.Embedding(vocab_size, 512, padding_idx=0)
        self.embedding_global = nn.Embedding(vocab_size, 512, padding_idx=0)
        self.lstm = nn.LSTM(512, 2048, num_layers=1, bidirectional=True, bias=False)

    def run_lstm(self, embedded, lengths):
        """Packed bidirectional LSTM, directions averaged: [N, T, E] -> [N, T, H]."""
        packed = nn.utils.rnn.pack_padded_sequence(
            embedded, lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=embedded.shape[1]
        )
        return (out[:, :, :2048] + out[:, :, 2048:]) / 2

    def forward(self, captions, lengths):
        return (
            self.run_lstm(self.embedding_global(captions), lengths),
            self.run_lstm(self.embedding_local(captions), lengths),
        )


class NonLocalNet(nn.Module):
    def __init__(self, parts: int, feature_length: int):
        super().__init__()
        inner = feature_length // 2
        self.up_dim_conv = nn.Sequential(
            *[Pointwise(inner, feature_length, relu=True, bn=True) for _ in range(parts)]
        )
        self.part_sim_conv = nn.Sequential(
            *[Pointwise(feature_length, inner, relu=True) for _ in range(parts)]
        )
        self.cur_sim_conv = nn.Sequential(
            *[Pointwise(feature_length, inner, relu=True) for _ in range(parts)]
        )
        self.conv_local_att = nn.Sequential(*[Pointwise(feature_length, 512) for _ in range(parts)])
        self.parts = parts

    def forward(self, x):
        """[N, D, K] activated parts -> [N, 512, K] relation features."""

        def per_part(layers, inputs):
            return torch.stack(
                [layers[k](inputs[:, :, k, None, None]) for k in range(self.parts)], dim=2
            )

        def normalise(v):
            return v / (v.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-8)

        part = normalise(per_part(self.part_sim_conv, x))  # [N, R, K]
        current = normalise(per_part(self.cur_sim_conv, x))
        affinity = torch.bmm(part.transpose(1, 2), current) - 1e6 * torch.eye(self.parts)
        attention = F.softmax(affinity, dim=1)
        attended = torch.bmm(part, attention)  # [N, R, K]
        residual = x + per_part(self.up_dim_conv, attended)
        return per_part(self.conv_local_att, residual)


class TextImgPersonReidNet(nn.Module):
    def __init__(self, torchvision, vocab_size: int, parts: int = 6, feature_length: int = 1024):
        super().__init__()
        resnet = torchvision.models.resnet50()
        self.ImageExtract = nn.Sequential(*list(resnet.children())[:-2])
        self.TextExtract = TextExtract(vocab_size)
        self.conv_local = nn.Sequential(*[Pointwise(2048, feature_length) for _ in range(parts)])
        self.conv_global = Pointwise(2048, feature_length)
        self.non_local_net = NonLocalNet(parts, feature_length)
        self.conv_word_classifier = nn.Sequential(
            nn.Conv2d(2048, parts, kernel_size=1, bias=False), nn.Sigmoid()
        )
        self.parts = parts

    def _parts(self, stripes):
        """[N, 2048, K] -> activated part features [N, D, K] (ssan §2.7: the in-place
        LeakyReLU of the reference activates the returned tensor too)."""
        local = torch.stack(
            [self.conv_local[k](stripes[:, :, k, None, None]) for k in range(self.parts)], dim=2
        )
        return F.leaky_relu(local, 0.25)

    def forward(self, images):
        """Image embeddings (what BatchNorm calibration runs)."""
        return self.img_embedding(images)

    def img_embedding(self, images):
        feature_map = self.ImageExtract(images)
        pooled = F.adaptive_max_pool2d(feature_map, (1, 1))
        image_global = self.conv_global(pooled)
        stripes = F.adaptive_max_pool2d(feature_map, (self.parts, 1))[:, :, :, 0]
        local = self._parts(stripes)
        return image_global, local, self.non_local_net(local)

    def txt_embedding(self, captions, lengths):
        words_global, words_local = self.TextExtract(captions, lengths)
        # Max over all T steps, padded zeros included (ssan §2.5).
        text_global = self.conv_global(words_global.max(dim=1).values[:, :, None, None])
        pooled = []
        for i, length in enumerate(lengths.tolist()):
            words = words_local[i, :length]  # [L, H]
            scores = torch.sigmoid(
                words @ self.conv_word_classifier[0].weight[:, :, 0, 0].T
            )  # [L, K]
            pooled.append((words[:, :, None] * scores[:, None, :]).max(dim=0).values)
        local = self._parts(torch.stack(pooled))
        return text_global, local, self.non_local_net(local)


class IdClassifiers(nn.Module):
    """The official Id_Loss weights: `W.{k}.block` Linear(dim, classes) per part."""

    def __init__(self, parts: int, dim: int, classes: int):
        super().__init__()
        self.W = nn.Sequential(*[_Classifier(dim, classes) for _ in range(parts)])


class _Classifier(nn.Module):
    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.block = nn.Linear(dim, classes)
