"""What a network learned, from its weights and activations alone (no gradients needed,
so any ONNX model works): filters, feature maps, feature spaces (embeddings, neighbours,
PCA / t-SNE, confusion matrix, clusters) and maximally activating patches over data sets.

One module per tool; every data-set tool streams the data in chunks (bounded memory) and
takes a ``progress(done, total)`` callback::

    from cnnviz.features import extract, top_patches, render_top_patches
    emb = extract(model, "photos/", layer="view")
    hits = top_patches(model, iter_shapes(10_000, seed=0), layer="relu_3", k=9)
"""

from __future__ import annotations

# the report sections register on import (explicitly, here)
from . import report
from .activations import (
    channel_overlay,
    feature_map_grid,
    layer_activations,
    signed_and_rectified,
    signed_pairs_grid,
    strongest_channels,
)
from .clusters import Clustering, cluster_samples, kmeans, purity, render_clusters
from .confusion import ConfusedPair, confusion_matrix, most_confused, render_confusion
from .embeddings import Embeddings, extract, pool
from .filters import (
    ConvFilters,
    conv_filters,
    conv_layers,
    high_frequency_energy,
    render_filters,
    rgb_tiles,
)
from .neighbors import knn_accuracy, label_agreement, nearest_neighbors, neighbor_rows
from .patches import (
    RunningTopK,
    TopPatches,
    projections,
    render_top_patches,
    top_images,
    top_patches,
)
from .projection import PCAResult, image_grid, pca, pca_axes_arrows, scatter, tsne
from .sources import Chunk, iter_chunks

__all__ = [
    "Chunk",
    "Clustering",
    "ConfusedPair",
    "ConvFilters",
    "Embeddings",
    "PCAResult",
    "RunningTopK",
    "TopPatches",
    "channel_overlay",
    "cluster_samples",
    "confusion_matrix",
    "conv_filters",
    "conv_layers",
    "extract",
    "feature_map_grid",
    "high_frequency_energy",
    "image_grid",
    "iter_chunks",
    "kmeans",
    "knn_accuracy",
    "label_agreement",
    "layer_activations",
    "most_confused",
    "nearest_neighbors",
    "neighbor_rows",
    "pca",
    "pca_axes_arrows",
    "pool",
    "projections",
    "purity",
    "render_clusters",
    "render_confusion",
    "render_filters",
    "render_top_patches",
    "report",
    "rgb_tiles",
    "scatter",
    "signed_and_rectified",
    "signed_pairs_grid",
    "strongest_channels",
    "top_images",
    "top_patches",
    "tsne",
]
