"""The seed's acceptance snippets (../shared/seeds), and cntk.minus, as every layer runs them."""

HELLO_WORLD = 'print("hello world")'

CNTK_SQUARED_ERROR = """\
import cntk
import numpy as np
x = cntk.input_variable(2)
y = cntk.input_variable(2)
x0 = np.asarray([[2., 1.]], dtype=np.float32)
y0 = np.asarray([[4., 6.]], dtype=np.float32)
print(cntk.squared_error(x, y).eval({x:x0, y:y0}))
"""

KERAS_BACKEND = "import keras\nprint(keras.__name__)"

CNTK_MINUS = "import cntk\nprint(cntk.minus([1, 2, 3], [4, 5, 6]).eval())"
