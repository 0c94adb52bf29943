"""Train and serve a project's task specialist (the model in `core_model.specialist`).

Modules: `data` (accepted masks of the project's labels as training targets, with the checks
that refuse unusable data), `losses` (structure loss), `metrics` (mIoU, Dice, MAE, S-measure),
`trainer` (the resumable training loop and its settings), `gate` (the held-out quality gate) and
`service` (store -> split -> train -> gate -> publish; listing the specialists).
"""
