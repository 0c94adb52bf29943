"""Mask codecs and geometry (numpy only): COCO RLE, Label Studio brush RLE, polygons, boxes."""

from core_model.masks.brush import brush_rle_to_mask, decode_brush_rle, encode_brush_rle
from core_model.masks.coco import (
    CocoRLE,
    coco_rle_area,
    coco_rle_bbox,
    decode_coco_rle,
    encode_coco_rle,
    encode_coco_rle_batch,
    encode_coco_rle_placed,
)
from core_model.masks.geometry import (
    box_iou_xyxy,
    box_xyxy_to_xywh,
    mask_to_box_xyxy,
    mask_to_polygons,
    masks_to_boxes_xyxy,
    nms_xyxy,
    polygons_to_mask,
    resize_mask,
)

__all__ = [
    "CocoRLE",
    "box_iou_xyxy",
    "box_xyxy_to_xywh",
    "brush_rle_to_mask",
    "coco_rle_area",
    "coco_rle_bbox",
    "decode_brush_rle",
    "decode_coco_rle",
    "encode_brush_rle",
    "encode_coco_rle",
    "encode_coco_rle_batch",
    "encode_coco_rle_placed",
    "mask_to_box_xyxy",
    "mask_to_polygons",
    "masks_to_boxes_xyxy",
    "nms_xyxy",
    "polygons_to_mask",
    "resize_mask",
]
